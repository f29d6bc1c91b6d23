//! What one directory change costs with 100,000 users in memory: the policy applies each
//! batch to a copy of the live directory (validate, store, swap), so the copy is the cost.
//! Run with `cargo bench --bench directory`.

use std::time::{Duration, Instant};

use causette::directory::{DirectoryChange, Profile};
use causette::policy::directory::DirectoryState;

const SCHOOLS: usize = 100;
const PER_SCHOOL: usize = 1000;
const CLASS_SIZE: usize = 25;

fn directory() -> DirectoryState {
    let mut state = DirectoryState::default();
    for school in 0..SCHOOLS {
        let id = format!("s{school}");
        state
            .apply(&DirectoryChange::PutStructure {
                id: id.clone(),
                name: format!("School {school}"),
            })
            .unwrap();
        for n in 0..PER_SCHOOL {
            let username = format!("u{school}x{n}");
            state
                .apply(&DirectoryChange::PutUser {
                    username: username.clone(),
                    display_name: username.clone(),
                    profile: if n % 25 == 0 {
                        Profile::Teacher
                    } else {
                        Profile::Student
                    },
                    structures: vec![id.clone()],
                })
                .unwrap();
            if n % CLASS_SIZE == 0 {
                state
                    .apply(&DirectoryChange::PutClass {
                        id: format!("{id}c{}", n / CLASS_SIZE),
                        structure: id.clone(),
                        name: format!("Class {}", n / CLASS_SIZE),
                        members: None,
                    })
                    .unwrap();
            }
            state
                .apply(&DirectoryChange::AddClassMember {
                    class: format!("{id}c{}", n / CLASS_SIZE),
                    username,
                })
                .unwrap();
        }
    }
    state
}

/// Mean time of copying the live directory and applying `change` to the copy.
fn measure(state: &DirectoryState, change: &DirectoryChange) -> Duration {
    const ROUNDS: u32 = 20;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let mut next = state.clone();
        next.apply(change).unwrap();
        std::hint::black_box(&next);
    }
    started.elapsed() / ROUNDS
}

fn main() {
    let built = Instant::now();
    let state = directory();
    println!(
        "directory: {} users, {} classes, built in {:.2?}",
        state.users.len(),
        state.classes.len(),
        built.elapsed()
    );
    let cases = [
        (
            "move a user to another school",
            DirectoryChange::PutUser {
                username: "u7x3".into(),
                display_name: "Moved".into(),
                profile: Profile::Student,
                structures: vec!["s8".into()],
            },
        ),
        (
            "add a class member",
            DirectoryChange::AddClassMember {
                class: "s9c3".into(),
                username: "u7x4".into(),
            },
        ),
        (
            "hide a user from search",
            DirectoryChange::SetHidden {
                username: "u7x5".into(),
                hidden: true,
            },
        ),
    ];
    for (name, change) in &cases {
        println!("{name}: {:.2?} per change", measure(&state, change));
    }
}
