//! A waiting task's place in the dispatch order: the fair queues' round-robin
//! ([`super::Executor`], "Fairness") played forward from now.

use std::collections::{BTreeSet, HashMap};

use super::{Executor, Queue};

/// Where a waiting task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePosition {
    /// 1 for the task the next free worker takes.
    pub position: usize,
    /// Tasks waiting in all (of every project).
    pub waiting: usize,
}

impl Queue {
    /// The place of `task_id` when the round-robin runs on from now, each project's turn
    /// coming in `(last_served, arrived)` order, and no running import ends meanwhile: a
    /// project with `per_project` imports running is skipped by the dispatcher, so its tasks
    /// come after every task of the projects below their limit (and among themselves in
    /// turn order). A running import of a held project that ends brings its tasks forward.
    fn position(&self, task_id: &str, per_project: u64) -> Option<QueuePosition> {
        let (owner, index) = self.projects.iter().find_map(|(owner, p)| {
            p.waiting
                .iter()
                .position(|id| id == task_id)
                .map(|i| (owner.as_str(), i))
        })?;
        let held = |p: &super::Project| p.running >= per_project;
        let own_held = self.projects.get(owner).is_some_and(held);
        // A held task waits for every task of the projects below their limit.
        let before: usize = if own_held {
            self.projects
                .values()
                .filter(|p| !held(p))
                .fold(0usize, |sum, p| sum.saturating_add(p.waiting.len()))
        } else {
            0
        };
        // Each round serves every project (of the task's kind: held or not) with work left
        // once, in turn order; projects that run out leave. The task is served in round
        // `index` (0-based).
        let order: BTreeSet<(u64, u64, &str)> = self
            .projects
            .iter()
            .filter(|(_, p)| !p.waiting.is_empty() && held(p) == own_held)
            .map(|(o, p)| (p.last_served, p.arrived, o.as_str()))
            .collect();
        let waiting: HashMap<&str, usize> = self
            .projects
            .iter()
            .map(|(o, p)| (o.as_str(), p.waiting.len()))
            .collect();
        let mut ahead = before;
        for (_, _, other) in &order {
            let n = waiting.get(other).copied().unwrap_or(0);
            // Rounds before the task's own: everyone's first `index` tasks (or fewer).
            ahead = ahead.saturating_add(n.min(index));
        }
        // In the task's round, the projects whose turn comes first and still have work.
        for (_, _, other) in &order {
            if *other == owner {
                break;
            }
            if waiting.get(other).copied().unwrap_or(0) > index {
                ahead = ahead.saturating_add(1);
            }
        }
        Some(QueuePosition {
            position: ahead.saturating_add(1),
            waiting: self.waiting,
        })
    }
}

impl Executor {
    /// Where waiting task `task_id` stands in the queue; `None` when it is not waiting.
    pub fn queue_position(&self, task_id: &str) -> Option<QueuePosition> {
        let per_project = u64::try_from(self.inner.per_project).unwrap_or(u64::MAX);
        super::lock(&self.inner.queue).position(task_id, per_project)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_queue_position_follows_the_round_robin() {
        let exec = Executor::new(100, 10);
        for id in ["a1", "a2", "a3"] {
            exec.submit(id, "A").unwrap();
        }
        exec.submit("b1", "B").unwrap();
        exec.submit("b2", "B").unwrap();
        // Dispatch order: a1 b1 a2 b2 a3.
        let place = |id| exec.queue_position(id).map(|p| p.position);
        assert_eq!(
            ["a1", "b1", "a2", "b2", "a3"].map(place),
            [1, 2, 3, 4, 5].map(Some)
        );
        assert_eq!(exec.queue_position("a1").unwrap().waiting, 5);
        assert_eq!(exec.queue_position("nope"), None);
        // Served: A was served last, so B's turn comes first now.
        assert_eq!(exec.take_job().unwrap().task_id, "a1");
        assert_eq!(["b1", "a2", "b2", "a3"].map(place), [1, 2, 3, 4].map(Some));
        assert_eq!(place("a1"), None);
    }

    #[test]
    fn test_queue_position_puts_a_project_at_its_limit_last() {
        // One import per project: A runs a1, so a2 waits for B's tasks.
        let exec = Executor::new(100, 1);
        exec.submit("a1", "A").unwrap();
        let a1 = exec.take_job().unwrap();
        exec.submit("a2", "A").unwrap();
        exec.submit("b1", "B").unwrap();
        exec.submit("b2", "B").unwrap();
        let place = |id| exec.queue_position(id).map(|p| p.position);
        assert_eq!(["b1", "b2", "a2"].map(place), [1, 2, 3].map(Some));
        // B's first task goes: both projects are at their limit now, and whichever import
        // ends first frees its project; A's turn comes first.
        let b1 = exec.take_job().unwrap();
        assert_eq!(b1.task_id, "b1");
        assert_eq!(["a2", "b2"].map(place), [1, 2].map(Some));
        // b1 ends: B is below its limit, A is not: b2 goes first.
        exec.finish_job(&b1, None);
        assert_eq!(["b2", "a2"].map(place), [1, 2].map(Some));
        assert_eq!(exec.take_job().unwrap().task_id, "b2");
        // a1 ends: a2 is next.
        exec.finish_job(&a1, None);
        assert_eq!(place("a2"), Some(1));
        assert_eq!(exec.take_job().unwrap().task_id, "a2");
    }
}
