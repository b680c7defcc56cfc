//! Requests parsed into an [`Endpoint`] before any handler runs: one plain `match` over
//! (method, path segments).
//!
//! Unknown paths are 404. A known path with a method it lacks is 405 with Glance's `Allow`
//! list; `DELETE /v2/tasks/{id}` is always 405 `Allow: GET` without looking the id up.

use http::Method;

use crate::api::error::ApiError;

/// Longest path segment accepted (ids are 36 bytes; tags are limited to 255 characters,
/// which percent-encoded UTF-8 can make up to 12 bytes each).
const MAX_SEGMENT_LEN: usize = 4096;

/// Most query parameters read from one request.
const MAX_QUERY_PARAMS: usize = 64;

/// Query parameters in request order, percent-decoded.
pub type Query = Vec<(String, String)>;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /`: the version list, status 300 (Glance).
    Root,
    /// `GET /versions`: the version list, status 200.
    Versions,
    /// `POST /v2/tasks`.
    CreateTask,
    /// `GET /v2/tasks`.
    ListTasks {
        /// Filters, sorting and paging.
        query: Query,
    },
    /// `GET /v2/tasks/{id}`.
    GetTask {
        /// Task id as sent.
        id: String,
    },
    /// `GET /v2/schemas/task`.
    TaskSchema,
    /// `GET /v2/schemas/tasks`.
    TasksSchema,
    /// `POST /v2/images`: a new `queued` image.
    CreateImage,
    /// `GET /v2/images`.
    ListImages {
        /// Filters, sorting and paging.
        query: Query,
    },
    /// `GET /v2/images/{id}`.
    GetImage {
        /// Image id as sent.
        id: String,
    },
    /// `PATCH /v2/images/{id}`.
    PatchImage {
        /// Image id as sent.
        id: String,
    },
    /// `DELETE /v2/images/{id}`.
    DeleteImage {
        /// Image id as sent.
        id: String,
    },
    /// `GET /v2/images/{id}/file`.
    DownloadImage {
        /// Image id as sent.
        id: String,
    },
    /// `PUT /v2/images/{id}/file`: direct upload.
    UploadImage {
        /// Image id as sent.
        id: String,
    },
    /// `PUT /v2/images/{id}/stage`: the data of a `glance-direct` import.
    StageImage {
        /// Image id as sent.
        id: String,
    },
    /// `GET /v2/images/{id}/tasks` (Images API v2.12): the tasks that made the image.
    ImageTasks {
        /// Image id as sent.
        id: String,
    },
    /// `POST /v2/images/{id}/actions/deactivate` (`true`) or `…/reactivate` (`false`).
    ImageAction {
        /// Image id as sent.
        id: String,
        /// Whether the image is to be deactivated (else reactivated).
        deactivate: bool,
    },
    /// `POST /v2/images/{id}/import`: an interoperable import into a queued image.
    ImportImage {
        /// Image id as sent.
        id: String,
    },
    /// `PUT /v2/images/{id}/tags/{tag}`.
    AddTag {
        /// Image id as sent.
        id: String,
        /// The tag, percent-decoded.
        tag: String,
    },
    /// `DELETE /v2/images/{id}/tags/{tag}`.
    DeleteTag {
        /// Image id as sent.
        id: String,
        /// The tag, percent-decoded.
        tag: String,
    },
    /// `GET /v2/schemas/image`.
    ImageSchema,
    /// `GET /v2/schemas/images`.
    ImagesSchema,
    /// `GET /v2/info/import`.
    ImportInfo,
    /// `GET /v2/info/stores`.
    StoresInfo,
    /// `GET /v2/info/usage`.
    UsageInfo,
    /// `GET /v2/schemas/member`.
    MemberSchema,
    /// `GET /v2/schemas/members`.
    MembersSchema,
    /// `GET /v2/images/{id}/members`.
    ListMembers {
        /// Image id as sent.
        id: String,
    },
    /// `POST /v2/images/{id}/members`.
    AddMember {
        /// Image id as sent.
        id: String,
    },
    /// `GET /v2/images/{id}/members/{member}`.
    GetMember {
        /// Image id as sent.
        id: String,
        /// Member (project) id as sent.
        member: String,
    },
    /// `PUT /v2/images/{id}/members/{member}`: the member's status.
    UpdateMember {
        /// Image id as sent.
        id: String,
        /// Member (project) id as sent.
        member: String,
    },
    /// `DELETE /v2/images/{id}/members/{member}`.
    DeleteMember {
        /// Image id as sent.
        id: String,
        /// Member (project) id as sent.
        member: String,
    },
}

impl Endpoint {
    /// Parses a request line.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] for unknown paths, [`ApiError::MethodNotAllowed`] (or
    /// [`ApiError::TaskDeleteNotPermitted`]) for a method the path lacks.
    pub fn from_request(
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Result<Endpoint, ApiError> {
        let segments = split_path(path).ok_or(ApiError::NotFound)?;
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let not_allowed = |allow: &'static str| {
            Err(ApiError::MethodNotAllowed {
                method: method.clone(),
                allow,
            })
        };
        let m = method;
        match segs.as_slice() {
            [] => match *m {
                Method::GET => Ok(Endpoint::Root),
                _ => not_allowed("GET"),
            },
            ["versions"] => match *m {
                Method::GET => Ok(Endpoint::Versions),
                _ => not_allowed("GET"),
            },
            ["v2", "tasks"] => match *m {
                Method::GET => Ok(Endpoint::ListTasks {
                    query: parse_query(query),
                }),
                Method::POST => Ok(Endpoint::CreateTask),
                _ => not_allowed("GET, POST"),
            },
            ["v2", "tasks", id] => match *m {
                Method::GET => Ok(Endpoint::GetTask {
                    id: (*id).to_owned(),
                }),
                Method::DELETE => Err(ApiError::TaskDeleteNotPermitted),
                _ => not_allowed("GET, DELETE"),
            },
            ["v2", "schemas", name] => {
                let endpoint = match *name {
                    "task" => Endpoint::TaskSchema,
                    "tasks" => Endpoint::TasksSchema,
                    "image" => Endpoint::ImageSchema,
                    "images" => Endpoint::ImagesSchema,
                    "member" => Endpoint::MemberSchema,
                    "members" => Endpoint::MembersSchema,
                    _ => return Err(ApiError::NotFound),
                };
                match *m {
                    Method::GET => Ok(endpoint),
                    _ => not_allowed("GET"),
                }
            }
            ["v2", "info", name @ ("import" | "stores" | "usage")] => match *m {
                Method::GET => Ok(match *name {
                    "import" => Endpoint::ImportInfo,
                    "stores" => Endpoint::StoresInfo,
                    _ => Endpoint::UsageInfo,
                }),
                _ => not_allowed("GET"),
            },
            ["v2", "images"] => match *m {
                Method::GET => Ok(Endpoint::ListImages {
                    query: parse_query(query),
                }),
                Method::POST => Ok(Endpoint::CreateImage),
                _ => not_allowed("GET, POST"),
            },
            ["v2", "images", id] => {
                let id = (*id).to_owned();
                match *m {
                    Method::GET => Ok(Endpoint::GetImage { id }),
                    Method::PATCH => Ok(Endpoint::PatchImage { id }),
                    Method::DELETE => Ok(Endpoint::DeleteImage { id }),
                    _ => not_allowed("GET, PATCH, DELETE"),
                }
            }
            ["v2", "images", id, "file"] => match *m {
                Method::GET => Ok(Endpoint::DownloadImage {
                    id: (*id).to_owned(),
                }),
                Method::PUT => Ok(Endpoint::UploadImage {
                    id: (*id).to_owned(),
                }),
                _ => not_allowed("GET, PUT"),
            },
            ["v2", "images", id, "stage"] => match *m {
                Method::PUT => Ok(Endpoint::StageImage {
                    id: (*id).to_owned(),
                }),
                _ => not_allowed("PUT"),
            },
            ["v2", "images", id, "tasks"] => match *m {
                Method::GET => Ok(Endpoint::ImageTasks {
                    id: (*id).to_owned(),
                }),
                _ => not_allowed("GET"),
            },
            ["v2", "images", id, "actions", action] => {
                let deactivate = match *action {
                    "deactivate" => true,
                    "reactivate" => false,
                    _ => return Err(ApiError::NotFound),
                };
                match *m {
                    Method::POST => Ok(Endpoint::ImageAction {
                        id: (*id).to_owned(),
                        deactivate,
                    }),
                    _ => not_allowed("POST"),
                }
            }
            ["v2", "images", id, "import"] => match *m {
                Method::POST => Ok(Endpoint::ImportImage {
                    id: (*id).to_owned(),
                }),
                _ => not_allowed("POST"),
            },
            ["v2", "images", id, "members"] => {
                let id = (*id).to_owned();
                match *m {
                    Method::GET => Ok(Endpoint::ListMembers { id }),
                    Method::POST => Ok(Endpoint::AddMember { id }),
                    _ => not_allowed("GET, POST"),
                }
            }
            ["v2", "images", id, "members", member] => {
                let (id, member) = ((*id).to_owned(), (*member).to_owned());
                match *m {
                    Method::GET => Ok(Endpoint::GetMember { id, member }),
                    Method::PUT => Ok(Endpoint::UpdateMember { id, member }),
                    Method::DELETE => Ok(Endpoint::DeleteMember { id, member }),
                    _ => not_allowed("GET, PUT, DELETE"),
                }
            }
            ["v2", "images", id, "tags", tag] => {
                let (id, tag) = ((*id).to_owned(), (*tag).to_owned());
                match *m {
                    Method::PUT => Ok(Endpoint::AddTag { id, tag }),
                    Method::DELETE => Ok(Endpoint::DeleteTag { id, tag }),
                    _ => not_allowed("PUT, DELETE"),
                }
            }
            _ => Err(ApiError::NotFound),
        }
    }

    /// Whether the endpoint answers without authentication (version discovery, as Glance's
    /// `versionnegotiation` filter does before keystonemiddleware).
    pub fn is_public(&self) -> bool {
        matches!(self, Endpoint::Root | Endpoint::Versions)
    }
}

/// `/v2/images/a%20b` → `["v2", "images", "a b"]`; `/` → `[]`. `None` for paths that are
/// not absolute, have empty segments, bad escapes or non-UTF-8 segments.
fn split_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.split('/')
        .map(|seg| {
            if seg.is_empty() || seg.len() > MAX_SEGMENT_LEN {
                return None;
            }
            percent_decode(seg)
        })
        .collect()
}

/// Decodes `%XX` escapes (a path segment: `+` stays `+`).
fn percent_decode(seg: &str) -> Option<String> {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.iter();
    while let Some(&b) = iter.next() {
        if b == b'%' {
            let hi = hex_value(*iter.next()?)?;
            let lo = hex_value(*iter.next()?)?;
            out.push(hi.checked_mul(16)?.checked_add(lo)?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `a=1&b=x+y` → `[("a","1"),("b","x y")]`, at most `MAX_QUERY_PARAMS` pairs.
pub fn parse_query(query: Option<&str>) -> Query {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .take(MAX_QUERY_PARAMS)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Result<Endpoint, ApiError> {
        Endpoint::from_request(&method, path, None)
    }

    #[test]
    fn test_endpoint_task_routes_parse() {
        assert!(matches!(
            route(Method::POST, "/v2/tasks"),
            Ok(Endpoint::CreateTask)
        ));
        assert!(matches!(
            route(Method::GET, "/v2/tasks/abc"),
            Ok(Endpoint::GetTask { id }) if id == "abc"
        ));
        assert!(matches!(
            Endpoint::from_request(&Method::GET, "/v2/tasks", Some("limit=2&status=success")),
            Ok(Endpoint::ListTasks { query }) if query.len() == 2
        ));
    }

    #[test]
    fn test_endpoint_member_and_info_routes_parse() {
        assert!(matches!(
            route(Method::POST, "/v2/images/i/members"),
            Ok(Endpoint::AddMember { id }) if id == "i"
        ));
        assert!(matches!(
            route(Method::PUT, "/v2/images/i/members/p"),
            Ok(Endpoint::UpdateMember { id, member }) if id == "i" && member == "p"
        ));
        assert!(matches!(
            route(Method::PATCH, "/v2/images/i/members/p"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, PUT, DELETE",
                ..
            })
        ));
        assert!(matches!(
            route(Method::DELETE, "/v2/images/i/members"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, POST",
                ..
            })
        ));
        assert!(matches!(
            route(Method::GET, "/v2/info/stores"),
            Ok(Endpoint::StoresInfo)
        ));
        assert!(matches!(
            route(Method::GET, "/v2/info/usage"),
            Ok(Endpoint::UsageInfo)
        ));
        assert!(matches!(
            route(Method::GET, "/v2/schemas/members"),
            Ok(Endpoint::MembersSchema)
        ));
    }

    #[test]
    fn test_endpoint_task_delete_is_405_without_lookup() {
        assert!(matches!(
            route(Method::DELETE, "/v2/tasks/does-not-exist"),
            Err(ApiError::TaskDeleteNotPermitted)
        ));
    }

    #[test]
    fn test_endpoint_wrong_methods_give_glance_allow_lists() {
        assert!(matches!(
            route(Method::PUT, "/v2/tasks"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, POST",
                ..
            })
        ));
        assert!(matches!(
            route(Method::PATCH, "/v2/tasks/x"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, DELETE",
                ..
            })
        ));
        assert!(matches!(
            route(Method::POST, "/v2/schemas/task"),
            Err(ApiError::MethodNotAllowed { allow: "GET", .. })
        ));
        assert!(matches!(
            route(Method::GET, "/v2/images/x/tags/t"),
            Err(ApiError::MethodNotAllowed {
                allow: "PUT, DELETE",
                ..
            })
        ));
    }

    #[test]
    fn test_endpoint_image_tasks_get_only() {
        assert!(matches!(
            route(Method::GET, "/v2/images/abc/tasks"),
            Ok(Endpoint::ImageTasks { id }) if id == "abc"
        ));
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(matches!(
                route(method, "/v2/images/abc/tasks"),
                Err(ApiError::MethodNotAllowed { allow: "GET", .. })
            ));
        }
        assert!(matches!(
            route(Method::GET, "/v2/images/abc/tasks/x"),
            Err(ApiError::NotFound)
        ));
    }

    #[test]
    fn test_endpoint_image_import_post_only() {
        assert!(matches!(
            route(Method::POST, "/v2/images/abc/import"),
            Ok(Endpoint::ImportImage { id }) if id == "abc"
        ));
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            assert!(matches!(
                route(method, "/v2/images/abc/import"),
                Err(ApiError::MethodNotAllowed { allow: "POST", .. })
            ));
        }
    }

    #[test]
    fn test_endpoint_unknown_paths_are_404() {
        for path in [
            "/v3/tasks",
            "/v2/tasks/",
            "//v2/tasks",
            "v2/tasks",
            "/v2/schemas/x",
            "/v2/images/a/b",
        ] {
            assert!(
                matches!(route(Method::GET, path), Err(ApiError::NotFound)),
                "{path}"
            );
        }
    }

    #[test]
    fn test_endpoint_tag_is_percent_decoded() {
        assert!(matches!(
            route(Method::PUT, "/v2/images/i/tags/a%20b+c"),
            Ok(Endpoint::AddTag { tag, .. }) if tag == "a b+c"
        ));
        assert!(matches!(
            route(Method::PUT, "/v2/images/i/tags/%zz"),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(
            route(Method::PUT, "/v2/images/i/tags/%ff"),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(
            route(Method::PUT, "/v2/images/i/tags/%4"),
            Err(ApiError::NotFound)
        ));
    }
}
