//! Disjoint data shards: which examples of a global batch or stream belong to which rank.
use std::ops::Range;

/// The contiguous slice of `0..len` owned by `rank` of `world`: sizes differ by at most one,
/// the first `len % world` ranks take one extra, and the slices tile `0..len` in rank order.
///
/// A global batch of `len` examples split this way and averaged with equal weights per example
/// reproduces the single-process mean only when every shard has the same size: use a `len`
/// divisible by `world` when exactness matters (see [`crate::ProcessGroup::all_reduce_grads`]).
pub fn shard_range(len: usize, rank: usize, world: usize) -> Range<usize> {
    assert!(
        world > 0 && rank < world,
        "shard_range: rank {rank} not in a world of {world}"
    );
    let base = len / world;
    let extra = len % world;
    let start = rank * base + rank.min(extra);
    let size = base + usize::from(rank < extra);
    start..start + size
}

/// Whether example `index` of a stream belongs to `rank` of `world` (round-robin), for streams
/// whose length is not known in advance.
pub fn owns(index: usize, rank: usize, world: usize) -> bool {
    assert!(
        world > 0 && rank < world,
        "owns: rank {rank} not in a world of {world}"
    );
    index % world == rank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_range_disjointly() {
        for len in [0, 1, 7, 8, 100] {
            for world in 1..5 {
                let mut next = 0;
                for rank in 0..world {
                    let r = shard_range(len, rank, world);
                    assert_eq!(r.start, next, "len {len} world {world} rank {rank}");
                    assert!(r.len() == len / world || r.len() == len / world + 1);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn round_robin_ownership_is_a_partition() {
        for i in 0..20 {
            assert_eq!((0..3).filter(|&r| owns(i, r, 3)).count(), 1);
        }
        assert!(owns(4, 1, 3) && !owns(4, 0, 3));
    }
}
