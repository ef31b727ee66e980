//! Who goes where: which rooms a worker owns (its shard) and which node URL each
//! room member connects to. Members of a room are spread over the URLs so that, with
//! two or more nodes, every room crosses nodes.

use std::fmt;
use std::str::FromStr;

/// Worker `index` of `count`. A room belongs to exactly one worker, so every latency
/// is measured by one process against its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn owns(&self, room: usize) -> bool {
        room % self.count as usize == self.index as usize
    }

    /// The rooms of `0..rooms` this shard owns.
    pub fn rooms(&self, rooms: usize) -> impl Iterator<Item = usize> + '_ {
        (0..rooms).filter(|r| self.owns(*r))
    }

    /// This shard's part of a total (rate, connections) proportional to its rooms.
    pub fn share(&self, total: f64, rooms: usize) -> f64 {
        if rooms == 0 {
            return 0.0;
        }
        total * self.rooms(rooms).count() as f64 / rooms as f64
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `i/N`, 0 ≤ i < N.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("shard `{s}` is not i/N"))?;
        let index: u32 = i.trim().parse().map_err(|_| format!("shard index `{i}` is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| format!("shard count `{n}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("shard `{s}` needs 0 <= i < N"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The URL member `member` of room `room` connects to: consecutive members go to
/// consecutive URLs, and rooms start at different URLs so load stays even.
pub fn url_for(urls: &[String], room: usize, member: usize) -> &str {
    &urls[(room + member) % urls.len()]
}

/// A room name unique to this run, so runs never meet each other's rooms.
pub fn room_name(run_id: &str, scenario: &str, room: usize) -> String {
    format!("lt-{run_id}-{scenario}-{room}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_rooms() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for room in 0..100 {
            assert_eq!(shards.iter().filter(|s| s.owns(room)).count(), 1, "room {room}");
        }
        let total: usize = shards.iter().map(|s| s.rooms(100).count()).sum();
        assert_eq!(total, 100);
        let rate: f64 = shards.iter().map(|s| s.share(9_000.0, 100)).sum();
        assert!((rate - 9_000.0).abs() < 1e-6);
    }

    #[test]
    fn shard_parsing_rejects_nonsense() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn room_members_land_on_different_nodes() {
        let urls = vec!["a".to_owned(), "b".to_owned()];
        for room in 0..10 {
            assert_ne!(url_for(&urls, room, 0), url_for(&urls, room, 1));
        }
    }
}
