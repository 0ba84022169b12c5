//! The route matcher: a trie per API over decoded path segments. Pure, no I/O.
//!
//! Priority, as Amazon API Gateway's HTTP APIs: a route that matches the whole path (its
//! segments literal or `{param}`) beats one that matches through `{proxy+}`, whatever the
//! depth of either (`/users/{id}/settings` beats `/users/public/{proxy+}` for
//! `/users/public/settings`); among those, a literal segment beats `{param}`, and the greedy
//! route with the longest prefix wins. At the matched node a route for the request's method
//! beats `ANY`; `HEAD` falls back to `GET`. The search backtracks, so `GET /pets/mine` finds
//! `GET /pets/{id}` when the literal `/pets/mine` exists only for `POST`. When no route accepts the method but some node
//! holds routes for the path, the result is [`Lookup::MethodNotAllowed`] with the methods the
//! nodes that match the path would accept together, for a `405` with `Allow`.

use ahash::AHashMap;

use crate::syntax::path::SegView;
use crate::syntax::route_key::{MethodSel, Seg};
use crate::syntax::Method;

#[derive(Debug)]
struct Methods<T> {
    by_method: [Option<T>; Method::NAMED.len()],
    any: Option<T>,
}

impl<T> Default for Methods<T> {
    fn default() -> Self {
        Methods {
            by_method: Default::default(),
            any: None,
        }
    }
}

impl<T> Methods<T> {
    fn is_empty(&self) -> bool {
        self.any.is_none() && self.by_method.iter().all(Option::is_none)
    }

    fn get(&self, m: Method) -> Option<&T> {
        let exact = m.index().and_then(|i| self.by_method[i].as_ref());
        let head_as_get = if m == Method::Head {
            self.by_method[0].as_ref()
        } else {
            None
        };
        exact.or(head_as_get).or(self.any.as_ref())
    }

    fn allowed(&self) -> Vec<Method> {
        if self.any.is_some() {
            return Method::NAMED.to_vec();
        }
        let mut v: Vec<Method> = Method::NAMED
            .iter()
            .zip(&self.by_method)
            .filter(|(_, r)| r.is_some())
            .map(|(m, _)| *m)
            .collect();
        if v.contains(&Method::Get) && !v.contains(&Method::Head) {
            v.insert(1, Method::Head);
        }
        v
    }
}

#[derive(Debug)]
struct Node<T> {
    lit: AHashMap<Box<str>, Node<T>>,
    param: Option<Box<Node<T>>>,
    greedy: Methods<T>,
    here: Methods<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            lit: AHashMap::new(),
            param: None,
            greedy: Methods::default(),
            here: Methods::default(),
        }
    }
}

/// Where a path variable's value lies: segments `start..end` of the routed path (a greedy
/// variable spans several, joined with `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capture {
    pub start: u32,
    pub end: u32,
}

/// Captures in route-declaration order; routes have few variables.
pub(crate) type Captures = smallvec::SmallVec<[Capture; 4]>;

/// The answer of [`Trie::lookup`].
#[derive(Debug)]
pub enum Lookup<'a, T> {
    Found(&'a T, Captures),
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// The routing table of one API.
#[derive(Debug)]
pub struct Trie<T> {
    root: Node<T>,
    default: Option<T>,
}

impl<T> Default for Trie<T> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
            default: None,
        }
    }
}

impl<T> Trie<T> {
    /// Adds a route; `Err` when the same method and path shape is already taken.
    pub fn insert(&mut self, method: MethodSel, segs: &[Seg], value: T) -> Result<(), String> {
        let mut node = &mut self.root;
        let mut slot_in_greedy = false;
        for seg in segs {
            match seg {
                Seg::Lit(s) => node = node.lit.entry(s.clone().into_boxed_str()).or_default(),
                Seg::Param(_) => node = node.param.get_or_insert_with(Default::default),
                Seg::Greedy(_) => slot_in_greedy = true,
            }
        }
        let table = if slot_in_greedy {
            &mut node.greedy
        } else {
            &mut node.here
        };
        let slot = match method {
            MethodSel::Any => &mut table.any,
            MethodSel::One(m) => match m.index() {
                Some(i) => &mut table.by_method[i],
                None => return Err("unknown method".into()),
            },
        };
        if slot.is_some() {
            return Err("another route has the same method and path".into());
        }
        *slot = Some(value);
        Ok(())
    }

    pub fn set_default(&mut self, value: T) -> Result<(), String> {
        if self.default.is_some() {
            return Err("$default is declared twice".into());
        }
        self.default = Some(value);
        Ok(())
    }

    /// Finds the route for `method` and `path`. Falls back to `$default` when no route matches
    /// the method; only without `$default` does a path known for other methods give 405.
    pub fn lookup(&self, method: Method, path: SegView<'_>) -> Lookup<'_, T> {
        let mut caps = Captures::new();
        let mut allowed: Option<Vec<Method>> = None;
        // Whole-path matches first, then matches through a greedy variable.
        for greedy in [false, true] {
            let mut w = Walk {
                method,
                path,
                greedy,
                caps: &mut caps,
                allowed: &mut allowed,
            };
            if let Some(v) = w.walk(&self.root, 0) {
                return Lookup::Found(v, caps);
            }
        }
        if let Some(d) = &self.default {
            // The whole path, which the `$default` route's integration sends on.
            let mut caps = Captures::new();
            if !path.is_empty() {
                caps.push(Capture {
                    start: 0,
                    end: path.len() as u32,
                });
            }
            return Lookup::Found(d, caps);
        }
        match allowed {
            Some(mut a) => {
                // In the usual order, once each.
                a.sort_by_key(|m| Method::NAMED.iter().position(|n| n == m));
                a.dedup();
                Lookup::MethodNotAllowed(a)
            }
            None => Lookup::NotFound,
        }
    }

    /// Adds what `m` accepts to `allowed`: every node the path reaches counts (the literal
    /// `/pets/special` for POST and `/pets/{id}` for GET make the path's `Allow` both).
    fn allow(allowed: &mut Option<Vec<Method>>, m: &Methods<T>) {
        if !m.is_empty() {
            allowed.get_or_insert_with(Vec::new).extend(m.allowed());
        }
    }
}

/// One search of the trie: whole-path matches only, or (`greedy`) through `{proxy+}` too.
struct Walk<'a, 'p> {
    method: Method,
    path: SegView<'p>,
    greedy: bool,
    caps: &'a mut Captures,
    allowed: &'a mut Option<Vec<Method>>,
}

impl Walk<'_, '_> {
    fn walk<'t, T>(&mut self, node: &'t Node<T>, i: usize) -> Option<&'t T> {
        if i == self.path.len() {
            if let Some(v) = node.here.get(self.method) {
                return Some(v);
            }
            Trie::<T>::allow(self.allowed, &node.here);
            return None;
        }
        let seg = self.path.get(i);
        if let Some(child) = node.lit.get(seg) {
            if let Some(v) = self.walk(child, i + 1) {
                return Some(v);
            }
        }
        if let Some(child) = &node.param {
            self.caps.push(Capture {
                start: i as u32,
                end: i as u32 + 1,
            });
            if let Some(v) = self.walk(child, i + 1) {
                return Some(v);
            }
            self.caps.pop();
        }
        if !self.greedy {
            return None;
        }
        if let Some(v) = node.greedy.get(self.method) {
            self.caps.push(Capture {
                start: i as u32,
                end: self.path.len() as u32,
            });
            return Some(v);
        }
        Trie::<T>::allow(self.allowed, &node.greedy);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::path::normalise;
    use crate::syntax::route_key::parse_route_path;

    fn table(routes: &[(&str, &str)]) -> Trie<String> {
        let mut t = Trie::default();
        for (m, p) in routes {
            let sel = if *m == "ANY" {
                MethodSel::Any
            } else {
                MethodSel::One(Method::from_route_name(m).unwrap())
            };
            t.insert(sel, &parse_route_path(p).unwrap(), format!("{m} {p}"))
                .unwrap();
        }
        t
    }

    fn find(t: &Trie<String>, m: Method, p: &str) -> Result<(String, Vec<(u32, u32)>), String> {
        let segs = normalise(p.as_bytes()).unwrap();
        match t.lookup(m, segs.view()) {
            Lookup::Found(v, c) => Ok((v.clone(), c.iter().map(|c| (c.start, c.end)).collect())),
            Lookup::MethodNotAllowed(a) => Err(format!("405 {:?}", a)),
            Lookup::NotFound => Err("404".into()),
        }
    }

    #[test]
    fn literal_beats_param_beats_greedy() {
        let t = table(&[
            ("GET", "/pets/{id}"),
            ("GET", "/pets/mine"),
            ("GET", "/pets/{proxy+}"),
        ]);
        assert_eq!(
            find(&t, Method::Get, "/pets/mine").unwrap().0,
            "GET /pets/mine"
        );
        assert_eq!(
            find(&t, Method::Get, "/pets/7").unwrap(),
            ("GET /pets/{id}".into(), vec![(1, 2)])
        );
        assert_eq!(
            find(&t, Method::Get, "/pets/7/toys").unwrap(),
            ("GET /pets/{proxy+}".into(), vec![(1, 3)])
        );
    }

    /// A route that matches the whole path beats any greedy one, however deep the greedy
    /// one's literal prefix: an open `{proxy+}` must not take a path a route with an
    /// authorizer matches.
    #[test]
    fn a_whole_path_match_beats_a_deeper_greedy_one() {
        let t = table(&[
            ("GET", "/users/{id}/settings"),
            ("GET", "/users/public/{proxy+}"),
            ("ANY", "/{proxy+}"),
        ]);
        assert_eq!(
            find(&t, Method::Get, "/users/public/settings").unwrap(),
            ("GET /users/{id}/settings".into(), vec![(1, 2)])
        );
        assert_eq!(
            find(&t, Method::Get, "/users/public/a/b").unwrap(),
            ("GET /users/public/{proxy+}".into(), vec![(2, 4)])
        );
        // Among greedy ones, the longest prefix; the method's route before ANY's greedy.
        assert_eq!(
            find(&t, Method::Get, "/users/public/x").unwrap().0,
            "GET /users/public/{proxy+}"
        );
        assert_eq!(
            find(&t, Method::Post, "/users/public/settings").unwrap().0,
            "ANY /{proxy+}"
        );
    }

    #[test]
    fn method_beats_any_and_head_uses_get() {
        let t = table(&[("ANY", "/x"), ("POST", "/x"), ("GET", "/y")]);
        assert_eq!(find(&t, Method::Post, "/x").unwrap().0, "POST /x");
        assert_eq!(find(&t, Method::Delete, "/x").unwrap().0, "ANY /x");
        assert_eq!(find(&t, Method::Head, "/y").unwrap().0, "GET /y");
    }

    #[test]
    fn backtracks_from_a_literal_that_lacks_the_method() {
        let t = table(&[("POST", "/pets/mine"), ("GET", "/pets/{id}")]);
        assert_eq!(
            find(&t, Method::Get, "/pets/mine").unwrap().0,
            "GET /pets/{id}"
        );
    }

    #[test]
    fn method_not_allowed_lists_methods() {
        let t = table(&[("GET", "/pets"), ("POST", "/pets")]);
        assert_eq!(
            find(&t, Method::Delete, "/pets").unwrap_err(),
            "405 [Get, Head, Post]"
        );
        assert_eq!(find(&t, Method::Get, "/nothing").unwrap_err(), "404");
        // Every route the path matches counts: a literal, a variable, a greedy one.
        let t = table(&[
            ("POST", "/pets/special"),
            ("GET", "/pets/{id}"),
            ("PUT", "/pets/{proxy+}"),
        ]);
        assert_eq!(
            find(&t, Method::Delete, "/pets/special").unwrap_err(),
            "405 [Get, Head, Post, Put]"
        );
        assert_eq!(
            find(&t, Method::Delete, "/pets/7").unwrap_err(),
            "405 [Get, Head, Put]"
        );
    }

    #[test]
    fn default_catches_the_rest() {
        let mut t = table(&[("GET", "/pets")]);
        t.set_default("$default".into()).unwrap();
        assert_eq!(find(&t, Method::Get, "/other").unwrap().0, "$default");
        assert_eq!(find(&t, Method::Delete, "/pets").unwrap().0, "$default");
    }

    #[test]
    fn greedy_needs_one_segment_and_root_route_works() {
        let t = table(&[("ANY", "/files/{proxy+}"), ("GET", "/")]);
        assert_eq!(find(&t, Method::Get, "/files").unwrap_err(), "404");
        assert_eq!(find(&t, Method::Get, "/").unwrap().0, "GET /");
    }

    #[test]
    fn matching_uses_decoded_segments() {
        let t = table(&[("GET", "/caf%C3%A9/{name}")]);
        assert_eq!(
            find(&t, Method::Get, "/caf%c3%a9/a%20b").unwrap().0,
            "GET /caf%C3%A9/{name}"
        );
    }

    #[test]
    fn duplicate_routes_and_bad_paths_are_refused() {
        let mut t = table(&[("GET", "/pets/{id}")]);
        assert!(t
            .insert(
                MethodSel::One(Method::Get),
                &parse_route_path("/pets/{other}").unwrap(),
                "x".into()
            )
            .is_err());
        assert!(parse_route_path("pets").is_err());
        assert!(parse_route_path("/a/{p+}/b").is_err());
        assert!(parse_route_path("/a/{x}/{x}").is_err());
        assert!(parse_route_path("/a/x{y}").is_err());
        assert!(parse_route_path("/a//b").is_err());
        assert!(parse_route_path("/a/../b").is_err());
    }
}
