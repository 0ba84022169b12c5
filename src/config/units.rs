//! Parsing of the human units the config file uses: durations ("250ms", "29s", "5m", "1h",
//! "1d") and byte sizes ("512KiB", "10MiB", "1GiB", or a plain integer of bytes).
//!
//! Both parsers are pure and return a message that says what is allowed, so the config
//! validator can quote it next to the key and the bad value.

use std::time::Duration;

/// What a duration may look like, quoted in errors.
pub(crate) const DURATION_HELP: &str =
    "a number with a unit: ms, s, m, h or d (e.g. \"250ms\", \"29s\", \"5m\")";
/// What a size may look like, quoted in errors.
pub(crate) const SIZE_HELP: &str =
    "a number of bytes, optionally with a unit: B, KiB, MiB, GiB, KB, MB, GB (e.g. \"512KiB\", \"10MiB\")";

/// Parses "250ms", "29s", "5m", "1h", "1d". Fractions are not accepted: use a smaller unit.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(DURATION_HELP.to_string());
    }
    let n: u64 = num.parse().map_err(|_| DURATION_HELP.to_string())?;
    let per_unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(DURATION_HELP.to_string()),
    };
    n.checked_mul(per_unit_ms)
        .filter(|&ms| ms <= MAX_DURATION_MS)
        .map(Duration::from_millis)
        .ok_or_else(|| "a duration of at most 365d".to_string())
}

/// The longest duration any key takes: a year (timers past it overflow some drivers' wheels;
/// nothing an operator means is longer).
const MAX_DURATION_MS: u64 = 365 * 86_400_000;

/// Parses "512KiB", "10MiB", "1GiB", "100KB", "4096" or "4096B" into bytes.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(SIZE_HELP.to_string());
    }
    let n: u64 = num.parse().map_err(|_| SIZE_HELP.to_string())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(SIZE_HELP.to_string()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size is too large".to_string())
}

/// The most a certificate, key or CA file may hold (a public CA bundle is ~250 KB).
pub(crate) const MAX_PEM_FILE: u64 = 4 << 20;
/// The most the config file may hold.
pub(crate) const MAX_CONFIG_FILE: u64 = 64 << 20;

/// Reads a regular file of at most `max` bytes: a device (`/dev/zero`), a FIFO or a folder is
/// refused rather than read without end. The error says why, without the path.
pub(crate) fn read_file(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    read_checked(path, max, false)
}

/// [`read_file`], also from a pipe (`--config <(envsubst < tmpl)`, `/dev/stdin`): read up to
/// `max` bytes, as a file is.
pub(crate) fn read_file_or_pipe(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    read_checked(path, max, true)
}

fn read_checked(path: &std::path::Path, max: u64, pipe_ok: bool) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    // Looked at before it is opened: a device is never read.
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !(meta.is_file() || (pipe_ok && meta.file_type().is_fifo())) {
        return Err("not a regular file".into());
    }
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if meta.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("29s"), Ok(Duration::from_secs(29)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert!(parse_duration("366d").is_err());
        assert!(parse_duration("18446744073709551615ms").is_err());
    }

    #[test]
    fn files_are_read_only_when_regular_and_small() {
        assert_eq!(
            read_file(std::path::Path::new("/dev/zero"), 1 << 20),
            Err("not a regular file".to_string())
        );
        assert_eq!(
            read_file(std::path::Path::new("/tmp"), 1 << 20),
            Err("not a regular file".to_string())
        );
        let p = std::env::temp_dir().join(format!("tollgate-read-file-{}", std::process::id()));
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_file(&p, 10), Ok(b"0123456789".to_vec()));
        assert_eq!(read_file(&p, 9), Err("larger than 9 bytes".to_string()));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100KB"), Ok(100_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("10 furlongs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
