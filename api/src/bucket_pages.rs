//! Which buckets hold one page of a statistic.
//!
//! Why: the answer to "per day, per topic, over all history" has days × topics rows, and it
//! grows with history. Sorting all of it to cut one page of a hundred rows costs as much as the
//! answer is large, on every request. Instead the api first asks how many rows each bucket has
//! (`segments::bucket_rows_sql`: distinct keys per bucket, read from keys and times only), finds
//! here the buckets the page falls in, and reads the answer of those buckets alone. `total` is the
//! sum of the per-bucket rows, so it costs nothing more.

use clickhouse::Row;
use serde::Deserialize;

/// How many rows of the answer one bucket has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Deserialize)]
pub struct BucketRows {
    /// Bucket start, epoch seconds.
    pub bucket: u32,
    pub bucket_rows: u64,
}

/// The buckets one page falls in, and where the page starts in the first of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageWindow {
    /// Start of the page's earliest bucket.
    pub earliest: u32,
    /// Start of the page's latest bucket.
    pub latest: u32,
    /// Rows of the page's first bucket (in the requested order) that precede the page.
    pub skip: u64,
}

/// The window of the page of `rows_per_page` rows starting `offset` rows into the answer, whose
/// buckets are `buckets` in the requested order; `None` if the page lies past the answer.
pub fn locate(buckets: &[BucketRows], offset: u64, rows_per_page: u64) -> Option<PageWindow> {
    let page_end = offset.saturating_add(rows_per_page);
    let mut rows_before = 0u64;
    let mut first: Option<(u32, u64)> = None;
    let mut last = 0u32;
    for bucket in buckets {
        let rows_through = rows_before.saturating_add(bucket.bucket_rows);
        if first.is_none() && rows_through > offset {
            first = Some((bucket.bucket, offset - rows_before));
        }
        if first.is_some() {
            last = bucket.bucket;
            if rows_through >= page_end {
                break;
            }
        }
        rows_before = rows_through;
    }
    let (first_bucket, skip) = first?;
    Some(PageWindow {
        earliest: first_bucket.min(last),
        latest: first_bucket.max(last),
        skip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(rows: &[(u32, u64)]) -> Vec<BucketRows> {
        let mut buckets = Vec::new();
        for (bucket, bucket_rows) in rows {
            buckets.push(BucketRows {
                bucket: *bucket,
                bucket_rows: *bucket_rows,
            });
        }
        buckets
    }

    #[test]
    fn a_page_inside_one_bucket() {
        let ascending = buckets(&[(100, 5), (200, 5), (300, 5)]);
        let window = locate(&ascending, 6, 3);
        assert_eq!(
            window,
            Some(PageWindow {
                earliest: 200,
                latest: 200,
                skip: 1
            })
        );
    }

    #[test]
    fn a_page_across_buckets_in_either_order() {
        let ascending = buckets(&[(100, 5), (200, 5), (300, 5)]);
        assert_eq!(
            locate(&ascending, 3, 8),
            Some(PageWindow {
                earliest: 100,
                latest: 300,
                skip: 3
            })
        );
        let descending = buckets(&[(300, 5), (200, 5), (100, 5)]);
        assert_eq!(
            locate(&descending, 5, 6),
            Some(PageWindow {
                earliest: 100,
                latest: 200,
                skip: 0
            })
        );
    }

    #[test]
    fn a_page_ending_on_a_bucket_boundary_reads_no_further() {
        let ascending = buckets(&[(100, 5), (200, 5), (300, 5)]);
        assert_eq!(
            locate(&ascending, 0, 5),
            Some(PageWindow {
                earliest: 100,
                latest: 100,
                skip: 0
            })
        );
    }

    #[test]
    fn past_the_answer_or_empty_there_is_no_page() {
        let ascending = buckets(&[(100, 5), (200, 5)]);
        assert_eq!(locate(&ascending, 10, 5), None);
        assert_eq!(locate(&[], 0, 5), None);
        let last_row = locate(&ascending, 9, 5);
        assert_eq!(last_row.map(|window| window.skip), Some(4));
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        let ascending = buckets(&[(100, u64::MAX / 2)]);
        assert_eq!(locate(&ascending, u64::MAX - 1, u64::MAX), None);
    }
}
