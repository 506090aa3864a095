//! A reference model of a filesystem: random operation sequences ([`ops`])
//! run in a plain directory (the reference) and in another place under test
//! ([`world`]), every outcome compared, and the trees ([`tree`]) compared every
//! few operations and at the end. Intended differences are spelled out in
//! [`reference_outcome`], nowhere else.

pub mod ops;
pub mod tree;
pub mod world;

use ops::Op;
use tree::Tree;
use world::{Errno, Outcome, World};

/// Trees are compared after this many operations, and at the end.
const TREE_EVERY: usize = 8;

/// What the place under test must answer, given the reference directory.
///
/// The one deliberate difference: a share refuses device nodes with `EPERM`
/// (docs/SEMANTICS.md, Containment). The reference still tries, so that the
/// errors a share gives before that refusal (the name exists, the parent does
/// not) are checked too, and removes the device it made.
pub fn reference_outcome(reference: &mut World, op: &Op) -> Outcome {
    let outcome = reference.apply(op);
    match (op, outcome) {
        (Op::MakeDevice { path, .. }, Ok(_)) => {
            std::fs::remove_file(reference.root().join(path)).expect("remove the reference's device node");
            Err(Errno(libc::EPERM))
        }
        (_, outcome) => outcome,
    }
}

fn compare_trees(reference: &World, tested: &World, after: usize) -> Result<(), String> {
    let (expected, got) = (Tree::read(reference.root())?, Tree::read(tested.root())?);
    let differences = expected.differences(&got);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(format!("trees differ after {after} operations:\n{}", differences.join("\n")))
    }
}

/// Runs [`ops::seed`] and then `ops` in both worlds, which start as empty
/// directories; the first difference is the error.
pub fn check_sequence(reference: &mut World, tested: &mut World, ops: &[Op]) -> Result<(), String> {
    let seeded: Vec<Op> = ops::seed().into_iter().chain(ops.iter().cloned()).collect();
    for (done, op) in seeded.iter().enumerate() {
        let expected = reference_outcome(reference, op);
        let got = tested.apply(op);
        if got != expected {
            return Err(format!("operation {done} {op:?}:\n  reference {expected:?}\n  share     {got:?}"));
        }
        if (done + 1) % TREE_EVERY == 0 {
            compare_trees(reference, tested, done + 1)?;
        }
    }
    reference.close_all();
    tested.close_all();
    compare_trees(reference, tested, seeded.len())
}
