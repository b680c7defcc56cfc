//! Who may do what: Glance's secure-RBAC default policies (`glance/policies/*.py`,
//! `enforce_new_defaults`) in one table (`Action::rule`), enforced by one function
//! ([`authorize`]).
//!
//! **Roles.** A caller's role is the highest of `admin`, `member` and `reader` among its role
//! names (case-insensitive), with Keystone's default implications: `admin` implies `member`,
//! which implies `reader` (Keystone expands implied roles into tokens; a proxy that sends only
//! `admin` still gets what Keystone's token would carry). Other names, `_member_` included,
//! grant nothing, as in Glance's new defaults: a deployment whose users hold only `_member_`
//! makes it imply `member` in Keystone. A caller with no known role gets 403 on every call
//! but version discovery and the schemas. `none` auth without identity headers is `admin`.
//!
//! **The table.** Admins may do everything. Otherwise an action needs a minimum role and,
//! for an existing resource, a scope: the caller's own project, an image it can see (its
//! project's, `public` or `community`, or `shared` with its project: [`Target::SharedWith`]),
//! or, for `modify_member`, an image shared with its project. Sluice's one difference: members may create import
//! tasks (Glance's `tasks_api_access` is admin-only), and readers list and show their
//! project's tasks.
//!
//! **Enforcement.** Every endpoint names its action in [`action_of`] (an exhaustive match:
//! a new endpoint does not compile until it names one) and the router checks the role part
//! ([`check_role`]) before the handler runs, so a caller whose roles cannot perform an action
//! at all gets 403 whatever it names. Handlers then call [`authorize`] with the image or task
//! they loaded: as Glance's `ImageAPIPolicy`, an image the caller cannot see is 404 for every
//! action, and one it sees but may not change is 403; another project's task is 403
//! ("Forbidden to get task …"). A 403 says "You are not authorized to complete `<policy>`
//! action." with Glance's policy name.

use crate::api::auth::RequestContext;
use crate::api::endpoint::Endpoint;
use crate::api::error::ApiError;
use crate::meta::{ImageRecord, TaskRecord};

/// The roles Sluice knows, ordered: each implies the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads its project's resources and the images it can see.
    Reader,
    /// Also creates tasks and changes its project's images.
    Member,
    /// Everything, in every project.
    Admin,
}

impl Role {
    /// The role a lower-case role name grants, if any.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }

    /// The highest role among lower-case role names (`None`: no role Sluice knows).
    pub fn highest<'n>(names: impl IntoIterator<Item = &'n str>) -> Option<Role> {
        names.into_iter().filter_map(Role::from_name).max()
    }
}

/// What a caller asks to do, named after Glance's policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create an image owned by the target project (`add_image`; the task path's
    /// `image_properties.owner`).
    AddImage,
    /// `POST /v2/images/{id}/members` (`add_member`): the image's owner shares it.
    AddMember,
    /// `POST /v2/tasks` (`add_task`).
    AddTask,
    /// Change an image's owner (Glance hard-codes this to admins).
    ChangeImageOwner,
    /// Make an image `community` (`communitize_image`).
    CommunitizeImage,
    /// `POST /v2/images/{id}/actions/deactivate` (`deactivate`).
    Deactivate,
    /// `DELETE /v2/images/{id}` (`delete_image`).
    DeleteImage,
    /// `DELETE /v2/images/{id}/members/{member}` (`delete_member`): the owner unshares.
    DeleteMember,
    /// `GET /v2/images/{id}/file` (`download_image`).
    DownloadImage,
    /// `GET /v2/images/{id}` and its tasks (`get_image`).
    GetImage,
    /// `GET /v2/images` (`get_images`).
    GetImages,
    /// `GET /v2/images/{id}/members/{member}` (`get_member`).
    GetMember,
    /// `GET /v2/images/{id}/members` (`get_members`).
    GetMembers,
    /// `GET /v2/tasks/{id}` (`get_task`).
    GetTask,
    /// `GET /v2/tasks` (`get_tasks`).
    GetTasks,
    /// `PATCH /v2/images/{id}` and the tag calls (`modify_image`).
    ModifyImage,
    /// `PUT /v2/images/{id}/members/{member}` (`modify_member`): a member answers.
    ModifyMember,
    /// Make an image `public` (`publicize_image`).
    PublicizeImage,
    /// `POST /v2/images/{id}/actions/reactivate` (`reactivate`).
    Reactivate,
    /// `PUT /v2/images/{id}/file` (`upload_image`).
    UploadImage,
}

/// Where a non-admin caller with the role may act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Anywhere: collections (lists show only what the caller may see) and creation in the
    /// caller's project.
    Any,
    /// Resources of the caller's project.
    OwnProject,
    /// Images the caller can see: its project's, `public` and `community` ones, and
    /// `shared` ones its project is a member of.
    VisibleImage,
    /// Images shared with the caller's project (it answers for its own membership).
    SharedWithCaller,
    /// Nowhere: admins only.
    AdminOnly,
}

impl Action {
    /// Glance's policy name, which a 403 names.
    pub fn name(self) -> &'static str {
        match self {
            Action::AddImage => "add_image",
            Action::AddMember => "add_member",
            Action::AddTask => "add_task",
            Action::ChangeImageOwner => "change_image_owner",
            Action::CommunitizeImage => "communitize_image",
            Action::Deactivate => "deactivate",
            Action::DeleteImage => "delete_image",
            Action::DeleteMember => "delete_member",
            Action::DownloadImage => "download_image",
            Action::GetImage => "get_image",
            Action::GetImages => "get_images",
            Action::GetMember => "get_member",
            Action::GetMembers => "get_members",
            Action::GetTask => "get_task",
            Action::GetTasks => "get_tasks",
            Action::ModifyImage => "modify_image",
            Action::ModifyMember => "modify_member",
            Action::PublicizeImage => "publicize_image",
            Action::Reactivate => "reactivate",
            Action::UploadImage => "upload_image",
        }
    }

    /// The rule table: the least role a caller needs, and where a non-admin may act.
    fn rule(self) -> (Role, Scope) {
        match self {
            Action::GetImages | Action::GetTasks => (Role::Reader, Scope::Any),
            Action::GetImage | Action::GetMember | Action::GetMembers => {
                (Role::Reader, Scope::VisibleImage)
            }
            Action::ModifyMember => (Role::Member, Scope::SharedWithCaller),
            Action::GetTask => (Role::Reader, Scope::OwnProject),
            Action::DownloadImage => (Role::Member, Scope::VisibleImage),
            Action::AddTask => (Role::Member, Scope::Any),
            Action::AddImage
            | Action::AddMember
            | Action::CommunitizeImage
            | Action::Deactivate
            | Action::DeleteImage
            | Action::DeleteMember
            | Action::ModifyImage
            | Action::Reactivate
            | Action::UploadImage => (Role::Member, Scope::OwnProject),
            Action::ChangeImageOwner | Action::PublicizeImage => (Role::Admin, Scope::AdminOnly),
        }
    }

    /// The 403 for a caller this action is refused to.
    fn denied(self) -> ApiError {
        match self {
            // Glance's fixed text for a non-admin `replace /owner`.
            Action::ChangeImageOwner => {
                ApiError::Forbidden("Owner can't be updated by non admin.".into())
            }
            other => ApiError::NotAuthorized(other.name()),
        }
    }
}

/// What an action applies to.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// A collection, or a task created in the caller's project.
    Collection,
    /// An image not created yet, to be owned by `owner`.
    NewImage {
        /// The project that would own it.
        owner: &'a str,
    },
    /// An existing image the caller's project is not a member of.
    Image(&'a ImageRecord),
    /// An existing `shared` image of another project that the caller's project is a member
    /// of (whatever its member status: Glance shows such an image by id even when pending
    /// or rejected).
    SharedWith(&'a ImageRecord),
    /// An existing task.
    Task(&'a TaskRecord),
}

/// The action an endpoint performs; `None` for the public version documents and the schemas
/// (which any authenticated caller may read, as in Glance).
pub fn action_of(endpoint: &Endpoint) -> Option<Action> {
    match endpoint {
        Endpoint::Root
        | Endpoint::Versions
        | Endpoint::TaskSchema
        | Endpoint::TasksSchema
        | Endpoint::ImageSchema
        | Endpoint::ImagesSchema
        | Endpoint::ImportInfo
        | Endpoint::StoresInfo
        | Endpoint::UsageInfo
        | Endpoint::MemberSchema
        | Endpoint::MembersSchema => None,
        Endpoint::ListMembers { .. } => Some(Action::GetMembers),
        Endpoint::AddMember { .. } => Some(Action::AddMember),
        Endpoint::GetMember { .. } => Some(Action::GetMember),
        Endpoint::UpdateMember { .. } => Some(Action::ModifyMember),
        Endpoint::DeleteMember { .. } => Some(Action::DeleteMember),
        Endpoint::CreateTask => Some(Action::AddTask),
        Endpoint::CreateImage => Some(Action::AddImage),
        Endpoint::ListTasks { .. } => Some(Action::GetTasks),
        Endpoint::GetTask { .. } => Some(Action::GetTask),
        Endpoint::ListImages { .. } => Some(Action::GetImages),
        Endpoint::GetImage { .. } | Endpoint::ImageTasks { .. } => Some(Action::GetImage),
        Endpoint::DownloadImage { .. } => Some(Action::DownloadImage),
        // Glance checks `modify_image` for every import method but copy-image.
        Endpoint::PatchImage { .. }
        | Endpoint::AddTag { .. }
        | Endpoint::DeleteTag { .. }
        | Endpoint::ImportImage { .. }
        | Endpoint::StageImage { .. } => Some(Action::ModifyImage),
        Endpoint::DeleteImage { .. } => Some(Action::DeleteImage),
        Endpoint::ImageAction {
            deactivate: true, ..
        } => Some(Action::Deactivate),
        Endpoint::ImageAction {
            deactivate: false, ..
        } => Some(Action::Reactivate),
        Endpoint::UploadImage { .. } => Some(Action::UploadImage),
    }
}

/// The role part of the rule: whether the caller's role can perform `action` anywhere.
///
/// # Errors
/// 403 naming the policy when it cannot.
pub fn check_role(ctx: &RequestContext, action: Action) -> Result<(), ApiError> {
    let (least, _) = action.rule();
    if ctx.role >= Some(least) {
        Ok(())
    } else {
        Err(action.denied())
    }
}

/// Whether the caller can see an image of `owner` with `visibility` without being a member
/// of it (admins see everything; membership is [`Target::SharedWith`]).
pub fn can_see_image(ctx: &RequestContext, owner: &str, visibility: &str) -> bool {
    ctx.role == Some(Role::Admin)
        || owner == ctx.project_id
        || visibility == "public"
        || visibility == "community"
}

/// The whole rule for `action` on `target`.
///
/// # Errors
/// 403 naming the policy when the caller's role is not enough, or when it sees an image it
/// may not act on; 404 for an image it cannot see; 403 "Forbidden to get task …" for
/// another project's task.
pub fn authorize(ctx: &RequestContext, action: Action, target: Target<'_>) -> Result<(), ApiError> {
    check_role(ctx, action)?;
    if ctx.role == Some(Role::Admin) {
        return Ok(());
    }
    let (_, scope) = action.rule();
    let (owner, visibility) = match target {
        Target::Collection => return Ok(()),
        Target::NewImage { owner } => (owner, None),
        Target::Image(image) => (image.owner.as_str(), Some(image.visibility.as_str())),
        Target::SharedWith(_) => {
            return match scope {
                Scope::Any | Scope::VisibleImage | Scope::SharedWithCaller => Ok(()),
                Scope::OwnProject | Scope::AdminOnly => Err(action.denied()),
            }
        }
        Target::Task(task) => (task.owner.as_str(), None),
    };
    let in_scope = match scope {
        Scope::Any => true,
        Scope::OwnProject => owner == ctx.project_id,
        Scope::VisibleImage => can_see_image(ctx, owner, visibility.unwrap_or("private")),
        Scope::SharedWithCaller | Scope::AdminOnly => false,
    };
    if in_scope {
        return Ok(());
    }
    Err(match target {
        Target::Image(image) if !can_see_image(ctx, &image.owner, &image.visibility) => {
            ApiError::ImageNotFound(image.id.clone())
        }
        Target::Task(task) => ApiError::TaskForbidden(task.id.clone()),
        Target::Collection | Target::NewImage { .. } | Target::Image(_) | Target::SharedWith(_) => {
            action.denied()
        }
    })
}

#[cfg(test)]
mod tests;
