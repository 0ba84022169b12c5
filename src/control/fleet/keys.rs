//! API key writes against the fleet's copy: what a write planned on this node's copy needs
//! the fleet's objects hash to hold for it to go through.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Change, Expect, Expects, KEY_HASH, OBJECTS};
use crate::control::store::StoredKey;
use crate::control::{Control, OpError};

/// What API key changes planned on this node's copy need the fleet to hold: a key this node
/// has must still be, in the fleet, what this node holds (a disable on one node and a new
/// description on another, planned from the same copy, would re-enable it; a delete would
/// be undone), and a new key's id and value must be no other key's (two nodes creating one
/// value at once). 409 at once when the fleet's copy already differs; 503 when Redis does
/// not answer.
pub(crate) async fn key_expects(
    ctl: &Rc<RefCell<Control>>,
    changes: &[Change],
) -> Result<Expects, OpError> {
    let mut expect = Expects::default();
    let mut held: Vec<(String, StoredKey)> = Vec::new();
    for c in changes {
        let (id, hash) = match c {
            Change::KeyPut { key } => (&key.id, Some(&key.hash)),
            Change::KeyDelete { id, .. } => (id, None),
            _ => continue,
        };
        let field = format!("key/{id}");
        match ctl.borrow().stored_keys.iter().find(|k| &k.id == id) {
            Some(k) => held.push((field, k.clone())),
            None => {
                expect.insert(field, Expect::Absent);
                if let Some(h) = hash {
                    expect.insert(format!("{KEY_HASH}{h}"), Expect::Absent);
                }
            }
        }
    }
    let link = ctl.borrow().fleet.clone();
    let (Some(link), false) = (link, held.is_empty()) else {
        return Ok(expect);
    };
    let mut args: Vec<&[u8]> = vec![b"HMGET", OBJECTS.as_bytes()];
    args.extend(held.iter().map(|(f, _)| f.as_bytes()));
    let reply = link.call(&args).await.map_err(|e| {
        OpError(
            503,
            format!(
                "the fleet's Redis ({}) cannot be reached ({e}): nothing was changed; try again when it is back",
                link.name()
            ),
        )
    })?;
    for ((field, mine), theirs) in held.into_iter().zip(reply.items()) {
        // Compared as keys, not as text (a key written by another version may differ in
        // its JSON only); the write then expects the fleet's exact text.
        let same = theirs
            .bytes()
            .map(|b| (b, serde_json::from_slice::<StoredKey>(b)));
        match same {
            Some((raw, Ok(k))) if k == mine => {
                expect.insert(field, Expect::Is(String::from_utf8_lossy(raw).into_owned()));
            }
            Some(_) => {
                return Err(OpError(
                    409,
                    "the key was changed on another node since this node's copy (it catches up within a second): nothing was changed; read it again and retry".into(),
                ))
            }
            None => {
                return Err(OpError(
                    409,
                    "the key was deleted on another node (this node catches up within a second): nothing was changed".into(),
                ))
            }
        }
    }
    Ok(expect)
}
