//! Stable listing over APIs that page by offset (`$skip`, a page number) through a list
//! sorted by update time.
//!
//! Such a list moves under the reader: a record edited during the listing jumps to the end,
//! a deleted one leaves a gap, and every row behind it shifts one place towards the start,
//! so a plain offset skips a record that was never read (and no later run lists it again:
//! it did not change). [`OffsetCursor`] makes each page after the first re-read the last
//! rows of the page before (the overlap): rows the reader already has are dropped, a shift
//! up to the overlap costs nothing, and a larger one (none of the overlap is found) starts
//! the listing again from the top, a bounded number of times. [`NumberedCursor`] reads
//! lists paged by number (which cannot overlap) from their end. Records read twice are
//! de-duplicated by the engine, so over-reading is safe and under-reading never happens.

use serde::{Deserialize, Serialize};

use crate::http::ApiError;

/// Rows of the page before that each page re-reads.
pub const OVERLAP: usize = 5;

/// How often a listing may start again after a shift larger than the overlap.
pub const MAX_RESTARTS: u32 = 3;

/// Where an offset listing is: carried between pages in the page token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OffsetCursor {
    /// The offset of the first row not read yet, as the list stood when it was read.
    pub skip: usize,
    /// The ids of the last rows read, oldest first (at most [`OVERLAP`]).
    pub tail: Vec<String>,
    /// How often the listing started again.
    pub restarts: u32,
}

/// What to do with a window of rows the application returned.
#[derive(Debug, PartialEq)]
pub enum Advance {
    /// Keep the rows at these indices of the window (the ones not read before), and go on
    /// with `next` (`None` when the list is done).
    Rows {
        keep: Vec<usize>,
        next: Option<String>,
    },
    /// The list shifted past the overlap: rows may have been passed over. List again from
    /// the top with `next`.
    Restart { next: String },
}

impl OffsetCursor {
    /// Reads a page token (`None`: the first page).
    pub fn from_token(token: Option<&str>) -> Result<OffsetCursor, ApiError> {
        token.map_or_else(|| Ok(OffsetCursor::default()), decode)
    }

    /// The rows to ask for, as `(offset, count)`, for a page of `size` new rows.
    pub fn window(&self, size: usize) -> (usize, usize) {
        let back = self.tail.len().min(self.skip);
        (self.skip - back, size.max(1) + back)
    }

    /// Settles a returned window (the ids of its rows in order; `count` as asked).
    pub fn advance(&self, ids: &[String], count: usize) -> Result<Advance, ApiError> {
        let back = self.tail.len().min(self.skip);
        let overlap = &ids[..back.min(ids.len())];
        if back > 0 && !overlap.iter().any(|id| self.tail.contains(id)) {
            check_restarts(self.restarts)?;
            let again = OffsetCursor {
                restarts: self.restarts + 1,
                ..OffsetCursor::default()
            };
            return Ok(Advance::Restart {
                next: again.token(),
            });
        }
        let keep = self.unread(ids, back);
        let full = ids.len() >= count;
        let next = full.then(|| {
            let start = ids.len().saturating_sub(OVERLAP);
            OffsetCursor {
                skip: self.skip - back + ids.len(),
                tail: ids[start..].to_vec(),
                restarts: self.restarts,
            }
            .token()
        });
        Ok(Advance::Rows { keep, next })
    }

    /// The rows of a window not read before. A row of the page before is dropped where
    /// the overlap holds it in its old order; one found out of that order, or past the
    /// overlap, was edited meanwhile (the list is sorted by update time: it moved) and is
    /// read again.
    fn unread(&self, ids: &[String], back: usize) -> Vec<usize> {
        let mut last: Option<usize> = None;
        (0..ids.len())
            .filter(|&i| {
                let Some(t) = self.tail.iter().position(|x| *x == ids[i]) else {
                    return true;
                };
                if i >= back || last.is_some_and(|l| t < l) {
                    return true;
                }
                last = Some(t);
                false
            })
            .collect()
    }

    fn token(&self) -> String {
        encode(self)
    }
}

/// A cursor as the page token the engine hands back.
fn encode(cursor: &impl Serialize) -> String {
    serde_json::to_string(cursor).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(token: &str) -> Result<T, ApiError> {
    serde_json::from_str(token)
        .map_err(|e| ApiError::Malformed(format!("bad page token {token:?}: {e}")))
}

/// A listing may start again [`MAX_RESTARTS`] times; past that the list keeps changing
/// under the reader, and it is read again next run.
fn check_restarts(restarts: u32) -> Result<(), ApiError> {
    if restarts >= MAX_RESTARTS {
        return Err(ApiError::Transient(format!(
            "the list kept changing while it was read ({restarts} restarts); it is read again next run"
        )));
    }
    Ok(())
}

/// Where a page-numbered listing is (`page`, `pagesize` APIs such as WorkflowMax's). Such a
/// list cannot be read with overlapping pages, so it is read from the end: the first page
/// (which tells the list's size), then the last page down to the second, then the first
/// again. A row deleted before the reader's position moves the rows behind it back one
/// place, into a page still to be read (or into the first, read again at the end), so a
/// deletion never makes a row be skipped; rows added at the end are changes made after
/// the listing began, read by the next run. When the list shrinks below its size at the
/// start by more than that, or the API reports no size, the listing starts again from the
/// first page (a bounded number of times).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NumberedCursor {
    /// The page to ask for, from 1.
    pub page: usize,
    /// The list's total when the listing began, if the API reports one.
    pub total: Option<usize>,
    /// Past the first page: reading down from the last.
    #[serde(default)]
    pub descending: bool,
    /// How often the listing started again.
    pub restarts: u32,
}

impl NumberedCursor {
    /// Reads a page token (`None`: the first page).
    pub fn from_token(token: Option<&str>) -> Result<NumberedCursor, ApiError> {
        let first = || {
            Ok(NumberedCursor {
                page: 1,
                ..NumberedCursor::default()
            })
        };
        token.map_or_else(first, decode)
    }

    /// The token of what follows a page that returned `returned` rows of `size` asked,
    /// with the list's reported `total`; `None` when the list is done.
    pub fn next(
        &self,
        total: Option<usize>,
        returned: usize,
        size: usize,
    ) -> Result<Option<String>, ApiError> {
        let size = size.max(1);
        let Some(started) = self.total.or(total) else {
            // No size reported: forward, page after page, until a short page.
            return Ok((returned == size).then(|| self.at(self.page + 1, false, None)));
        };
        if total.is_some_and(|now| now + size <= started) {
            // It lost a whole page or more while being read: rows may have moved past
            // pages still to come as well as into the first.
            return self.restart();
        }
        let last = started.div_ceil(size);
        Ok(match (self.descending, self.page) {
            (false, _) if last <= 1 => None,
            (false, _) => Some(self.at(last, true, Some(started))),
            (true, 1) => None,
            (true, p) => Some(self.at(p - 1, true, Some(started))),
        })
    }

    fn at(&self, page: usize, descending: bool, total: Option<usize>) -> String {
        NumberedCursor {
            page,
            total,
            descending,
            restarts: self.restarts,
        }
        .token()
    }

    fn restart(&self) -> Result<Option<String>, ApiError> {
        check_restarts(self.restarts)?;
        let again = NumberedCursor {
            page: 1,
            total: None,
            descending: false,
            restarts: self.restarts + 1,
        };
        Ok(Some(again.token()))
    }

    fn token(&self) -> String {
        encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<String> {
        v.iter().map(|i| i.to_string()).collect()
    }

    /// Lists `rows` (ids in list order) with pages of `size`, letting `during` change the
    /// list before each page after the first; returns every id read.
    fn list(mut rows: Vec<u32>, size: usize, during: impl Fn(usize, &mut Vec<u32>)) -> Vec<u32> {
        let mut token: Option<String> = None;
        let mut read = Vec::new();
        for page in 0..100 {
            if page > 0 {
                during(page, &mut rows);
            }
            let cur = OffsetCursor::from_token(token.as_deref()).unwrap();
            let (skip, count) = cur.window(size);
            let window: Vec<String> = ids(&rows).into_iter().skip(skip).take(count).collect();
            match cur.advance(&window, count).unwrap() {
                Advance::Rows { keep, next } => {
                    read.extend(keep.iter().map(|&i| window[i].parse::<u32>().unwrap()));
                    match next {
                        Some(n) => token = Some(n),
                        None => return read,
                    }
                }
                Advance::Restart { next } => token = Some(next),
            }
        }
        panic!("the listing never ended");
    }

    #[test]
    fn an_edit_during_the_listing_never_makes_another_record_skipped() {
        // Contact 1 is edited just before page 2: it moves to the end, the rest shift.
        let read = list((1..=5).collect(), 2, |page, rows| {
            if page == 1 {
                rows.retain(|r| *r != 1);
                rows.push(1);
            }
        });
        for id in 1..=5 {
            assert!(read.contains(&id), "{id} was skipped: {read:?}");
        }
    }

    #[test]
    fn deletions_and_shifts_past_the_overlap_start_again_and_lose_nothing() {
        let read = list((1..=40).collect(), 10, |page, rows| {
            if page == 1 {
                rows.retain(|r| !(1..=8).contains(r));
            }
        });
        for id in 9..=40 {
            assert!(read.contains(&id), "{id} was skipped");
        }
    }

    /// Lists `rows` by numbered pages of `size`, letting `during` change the list before
    /// each request after the first; returns every id read.
    fn list_numbered(
        mut rows: Vec<u32>,
        size: usize,
        during: impl Fn(usize, &mut Vec<u32>),
    ) -> Vec<u32> {
        let mut token: Option<String> = None;
        let mut read = Vec::new();
        for call in 0..100 {
            if call > 0 {
                during(call, &mut rows);
            }
            let cur = NumberedCursor::from_token(token.as_deref()).unwrap();
            let page: Vec<u32> = rows
                .iter()
                .copied()
                .skip((cur.page - 1) * size)
                .take(size)
                .collect();
            read.extend(&page);
            match cur.next(Some(rows.len()), page.len(), size).unwrap() {
                Some(t) => token = Some(t),
                None => return read,
            }
        }
        panic!("the listing never ended");
    }

    #[test]
    fn a_numbered_listing_skips_nothing_when_rows_go_and_come_during_it() {
        for at in 1..5 {
            // A row deleted before the reader and one added at the end, the total unchanged.
            let read = list_numbered((1..=9).collect(), 2, |call, rows| {
                if call == at {
                    rows.remove(0);
                    rows.push(10);
                }
            });
            for id in 2..=9 {
                assert!(read.contains(&id), "at {at}: {id} was skipped: {read:?}");
            }
        }
        let read = list_numbered((1..=20).collect(), 3, |call, rows| {
            if call == 2 {
                rows.retain(|r| *r > 8);
            }
        });
        for id in 9..=20 {
            assert!(read.contains(&id), "{id} was skipped: {read:?}");
        }
    }

    #[test]
    fn an_unchanged_list_is_read_once_each() {
        let read = list((1..=23).collect(), 5, |_, _| {});
        assert_eq!(read, (1..=23).collect::<Vec<_>>());
    }
}
