//! What an evaluation may build, read and search: see [`Budget`].

use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the regular expressions of one evaluation may search in all (`matches`,
/// `replaceAll`, `split`): a search is linear in what it scans, but one after each match may
/// scan to the end of the string again (`'\s+$|\s'` over spaces), which no byte count bounds
/// without also refusing ordinary replacements over big bodies.
pub(crate) const MAX_SEARCH_TIME: Duration = Duration::from_millis(500);

/// The clock is read every this many searches.
const SEARCHES_PER_CLOCK: u32 = 16;

/// What an evaluation has built: each value it makes (a literal's copy, a list, a map, a
/// method's or `$util`'s result, a string, a copy of a variable or of the payload) counts its
/// [`weight`] once, when it is made. Counting what is made, not what is alive, also bounds the
/// time spent making it: a list doubled 23 times (1.2 GB) or a body split at every byte stops
/// at the budget.
pub(crate) struct Budget {
    used: usize,
    max: usize,
    /// Bytes of values that calls and comparisons went through (a string's `length()`, a
    /// comparison of two strings), and at most how many: a step that reads a big value costs
    /// what it reads.
    read: usize,
    read_max: usize,
    /// Regular-expression searches run, and when the first began.
    searches: u32,
    searching_since: Option<Instant>,
}

impl Budget {
    pub(crate) fn new(max: usize, read_max: usize) -> Budget {
        Budget {
            used: 0,
            max,
            read: 0,
            read_max,
            searches: 0,
            searching_since: None,
        }
    }

    /// Counts a regular-expression search about to run; `Err` once the evaluation's
    /// searches have taken [`MAX_SEARCH_TIME`] (templates without any never read the clock).
    pub(crate) fn search(&mut self) -> Result<(), String> {
        let since = *self.searching_since.get_or_insert_with(Instant::now);
        self.searches = self.searches.wrapping_add(1);
        if self.searches.is_multiple_of(SEARCHES_PER_CLOCK) && since.elapsed() > MAX_SEARCH_TIME {
            return Err(format!(
                "the template's regular expressions searched for more than {} ms",
                MAX_SEARCH_TIME.as_millis()
            ));
        }
        Ok(())
    }

    /// Counts `bytes` read; `Err` past the budget.
    pub(crate) fn read(&mut self, bytes: usize) -> Result<(), String> {
        self.read = self.read.saturating_add(bytes);
        if self.read > self.read_max {
            return Err(format!(
                "the template read more than {} bytes of values",
                self.read_max
            ));
        }
        Ok(())
    }

    /// Counts `bytes` made; `Err` past the budget.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), String> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max {
            return Err(self.over());
        }
        Ok(())
    }

    /// Counts a value made.
    pub(crate) fn made(&mut self, v: Value) -> Result<Value, String> {
        self.charge(weight(&v))?;
        Ok(v)
    }

    /// What may still be made (a method that builds piece by piece stops there).
    pub(crate) fn room(&self) -> usize {
        self.max.saturating_sub(self.used)
    }

    pub(crate) fn over(&self) -> String {
        format!("the template built more than {} bytes of values", self.max)
    }
}

/// What a value takes: a `Value` per node, and the bytes of its strings and names.
pub(crate) fn weight(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    match v {
        Value::String(s) => NODE + s.len(),
        Value::Array(a) => NODE + a.iter().map(weight).sum::<usize>(),
        Value::Object(m) => {
            NODE + m
                .iter()
                .map(|(k, x)| NODE + k.len() + weight(x))
                .sum::<usize>()
        }
        _ => NODE,
    }
}
