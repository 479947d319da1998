//! Sorting the few short lists read at start-up: a device's frame rates, `/dev/video*`
//! nodes, GPIO chips.
//!
//! Why not `slice::sort`: std's sort (driftsort) is several KB of machine code for every
//! element type and comparison it is instantiated with, and each of these lists has a
//! different one, for a handful of items sorted once. Insertion sort is a few dozen bytes per
//! instantiation, stable like `sort`, and on lists this short as fast. Not for lists a user
//! can make long (a `file:` camera's folder of frames keeps `sort`).

/// Sorts `items` in place, stably, so that no item is `less` than the one before it.
pub fn sort_short_by<T>(items: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && less(&items[j], &items[j - 1]) {
            items.swap(j, j - 1);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_std_and_keeps_equal_items_in_order() {
        let mut items = vec![(3, 'a'), (1, 'b'), (2, 'c'), (1, 'd'), (3, 'e'), (0, 'f')];
        let mut expected = items.clone();
        expected.sort_by_key(|item| item.0);
        sort_short_by(&mut items, |a, b| a.0 < b.0);
        assert_eq!(items, expected);
        assert_eq!(
            items,
            [(0, 'f'), (1, 'b'), (1, 'd'), (2, 'c'), (3, 'a'), (3, 'e')]
        );
    }

    #[test]
    fn empty_and_single_lists_are_left_alone() {
        let mut empty: Vec<u32> = Vec::new();
        sort_short_by(&mut empty, |a, b| a < b);
        assert!(empty.is_empty());
        let mut one = vec![7];
        sort_short_by(&mut one, |a, b| a < b);
        assert_eq!(one, [7]);
    }
}
