//! The task transitions' part of [`super::conformance_suite`]: [`MetaStore::transition_task`]
//! moves a task only as [`TaskStatus::can_become`] allows and of two racing writers exactly one
//! wins; [`MetaStore::transition_image_with_task`] writes the image and the task together or
//! neither; [`MetaStore::commit_import`] refuses a task that is no longer `processing`.
//! And [`MetaStore::image_tasks`] lists exactly the tasks of one image, by creation.

use std::sync::Barrier;

use super::{
    sample_image, sample_task, Decision, ImageRecord, ImageStatus, MetaError, MetaStore,
    TaskStatus, Transition,
};

const T: &str = "b2b2b2b2-0000-4000-8000-00000000000a";
const U: &str = "b2b2b2b2-0000-4000-8000-00000000000b";
const I: &str = "b2b2b2b2-0000-4000-8000-0000000000aa";

/// See the module docs. Leaves its records in the store.
pub(super) async fn transitions(store: &dyn MetaStore) {
    // A missing task is refused; pending → processing → success; no way back.
    let pending = sample_task(T);
    assert!(matches!(
        store.transition_task(&pending).await,
        Err(MetaError::TaskRefused { ref id, .. }) if id == T
    ));
    store.put_task(&pending).await.expect("put pending task");
    let mut processing = pending.clone();
    processing.status = TaskStatus::Processing;
    store
        .transition_task(&processing)
        .await
        .expect("pending becomes processing");
    assert!(matches!(
        store.transition_task(&pending).await,
        Err(MetaError::TaskRefused { ref id, .. }) if id == T
    ));
    assert!(matches!(
        store.transition_task(&processing).await,
        Err(MetaError::TaskRefused { .. })
    ));
    assert_eq!(
        store.get_task(T).await.expect("get task"),
        Some(processing.clone())
    );

    // Two writers racing from processing (a worker's success, a sweep's failure): exactly
    // one wins, and the stored task is the winner's.
    let mut success = processing.clone();
    success.status = TaskStatus::Success;
    let mut failure = processing.clone();
    failure.status = TaskStatus::Failure;
    failure.message = "swept".to_owned();
    let barrier = Barrier::new(2);
    let handle = tokio::runtime::Handle::current();
    let won: Vec<bool> = std::thread::scope(|s| {
        let racers: Vec<_> = [&success, &failure]
            .into_iter()
            .map(|task| {
                let (barrier, handle) = (&barrier, &handle);
                s.spawn(move || {
                    barrier.wait();
                    handle.block_on(store.transition_task(task)).is_ok()
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().expect("racer"))
            .collect()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let winner = if won.first() == Some(&true) {
        &success
    } else {
        &failure
    };
    assert_eq!(
        store.get_task(T).await.expect("get raced task"),
        Some(winner.clone())
    );

    // commit_import refuses a final task and writes no image.
    let new_image = "b2b2b2b2-0000-4000-8000-0000000000ab";
    let mut again = winner.clone();
    again.status = TaskStatus::Success;
    assert!(matches!(
        store.commit_import(&again, &sample_image(new_image)).await,
        Err(MetaError::TaskRefused { .. })
    ));
    assert_eq!(
        store.get_image(new_image).await.expect("get uncommitted"),
        None
    );

    // transition_image_with_task: both written, or neither.
    let mut queued = sample_image(I);
    queued.status = ImageStatus::Importing;
    store.put_image(&queued).await.expect("put importing image");
    let mut task = sample_task(U);
    task.status = TaskStatus::Processing;
    store.put_task(&task).await.expect("put processing task");
    let mut activate = |image: &mut ImageRecord| {
        image.status = ImageStatus::Active;
        Decision::Write
    };
    let mut done = task.clone();
    done.status = TaskStatus::Success;
    // The image refuses: the task is not written either.
    assert!(matches!(
        store
            .transition_image_with_task(I, &[ImageStatus::Queued], &mut activate, &done)
            .await,
        Ok(Transition::Refused(_))
    ));
    assert_eq!(
        store.get_task(U).await.expect("get task"),
        Some(task.clone())
    );
    // The task refuses (it is still pending): the image is not written either.
    let mut stale = task.clone();
    stale.status = TaskStatus::Pending;
    assert!(matches!(
        store
            .transition_image_with_task(I, &[ImageStatus::Importing], &mut activate, &stale)
            .await,
        Err(MetaError::TaskRefused { .. })
    ));
    assert_eq!(
        store.get_image(I).await.expect("get image"),
        Some(queued.clone())
    );
    // Both move.
    let moved = store
        .transition_image_with_task(I, &[ImageStatus::Importing], &mut activate, &done)
        .await
        .expect("image and task together");
    assert!(matches!(moved, Transition::Done(ref i) if i.status == ImageStatus::Active));
    assert_eq!(store.get_task(U).await.expect("get done task"), Some(done));
    assert_eq!(
        store
            .get_image(I)
            .await
            .expect("get active image")
            .map(|i| i.status),
        Some(ImageStatus::Active)
    );
}
