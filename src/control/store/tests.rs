//! The state store's unit tests.

use super::*;

fn dir() -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "tollgate-store-{}-{}",
        std::process::id(),
        crate::throttle::now_ns()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn keys_and_counters_survive_reopening() {
    let d = dir();
    {
        let s = Store::open(&d).unwrap();
        let k = StoredKey {
            id: "abc".into(),
            name: "n".into(),
            hash: "00".repeat(32),
            description: String::new(),
            enabled: true,
            plans: vec!["gold".into()],
            created: 1,
        };
        s.put_keys(&[k]).unwrap();
        s.flush(
            &[(
                "gold".into(),
                "abc".into(),
                QuotaState {
                    period: 5,
                    used: 42,
                    day: 20_000,
                    day_used: 7,
                },
            )],
            &[],
        )
        .unwrap();
    }
    let s = Store::open(&d).unwrap();
    assert_eq!(s.keys().unwrap()[0].id, "abc");
    assert_eq!(s.quotas().unwrap()[0].2.used, 42);
    let day = crate::throttle::day_string(20_000);
    assert_eq!(
        s.usage("gold", &day, &day, None).unwrap(),
        vec![("abc".to_string(), day.clone(), 7)]
    );
    assert!(s.delete_key("abc").unwrap());
    assert!(s.keys().unwrap().is_empty());
    assert!(s.quotas().unwrap().is_empty());
    assert!(s.usage("gold", &day, &day, None).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_corrupt_file_stops_start_up_and_is_left_alone() {
    let d = dir();
    std::fs::write(
        d.join(STATE_FILE),
        b"this is not a redb file, it is garbage garbage garbage",
    )
    .unwrap();
    let err = Store::open(&d).err().expect("refused");
    assert!(err.contains("cannot open"), "{err}");
    assert_eq!(
        std::fs::read(d.join(STATE_FILE)).unwrap(),
        b"this is not a redb file, it is garbage garbage garbage"
    );
    let _ = std::fs::remove_dir_all(&d);
}
