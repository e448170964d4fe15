//! What the core keeps between commands: an idle session holds no queue
//! memory (the idle-memory target of issue 13).

use super::*;

/// The queues' memory: kept while a reply is awaited (the next turn fills
/// them again), given back once the session is quiet, so an idle session
/// holds none.
#[test]
fn queues_are_released_when_quiet_and_kept_while_a_reply_is_awaited() {
    let mut c = ready();
    c.release_idle();
    assert_eq!(c.steps.capacity(), 0);
    assert!(c.order.is_released());
    client(&mut c, "NOOP");
    assert_eq!(steps(&mut c), vec!["send NOOP"]);
    c.release_idle();
    assert!(c.steps.capacity() > 0, "the NOOP's reply is awaited");
    assert!(!c.order.is_released());
    backend_says(&mut c, "200 ok");
    assert_eq!(steps(&mut c), vec!["reply 200 ok"]);
    c.release_idle();
    assert_eq!(c.steps.capacity(), 0);
    assert!(c.order.is_released());
}
