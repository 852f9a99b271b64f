//! The platform API's placement and cell endpoints: instances (place, list, remove), cells
//! (register, list, remove) and leases, for the admin and, narrowed to their grants, users.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tracing::info;

use c2c_api::endpoints::Endpoint;
use c2c_api::types::{
    CellList, CellRecord, Empty, PlaceRequest, PlacementList, RegisterCell, Removed, Signed,
};

use crate::auth::managed_app;
use crate::cell_api::sign_cell;
use crate::ctx::Ctx;
use crate::http::{error, json_body, reply, state_error, typed, ReqBody};
use crate::state::StateError;
use crate::tokens::Caller;

/// The operators' part of the external API: placed instances, registered cells, leases.
pub(crate) async fn placement_and_cells<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    caller: &Caller,
    ep: &Endpoint,
) -> Response<Full<Bytes>> {
    match ep {
        Endpoint::ListInstances => match ctx.with_state(|s| s.placements(None)).await {
            Ok(mut instances) => {
                instances.retain(|i| caller.may_manage(i.app_guid.as_str()));
                typed(StatusCode::OK, &PlacementList { instances })
            }
            Err(e) => state_error(e),
        },
        Endpoint::PlaceInstance(app) => {
            // Placement is the scheduler's (here: a user's token): a cell may only confirm an
            // instance placed on it, so it can obtain identities only for what runs on it.
            let p: PlaceRequest =
                match json_body(req, "{\"cell\": \"...\", \"index\": N (optional)}").await {
                    Ok(p) => p,
                    Err(r) => return r,
                };
            let app = app.to_string();
            let who = caller.clone();
            match ctx
                .with_state(move |s| {
                    let a = managed_app(s, &who, &app)?;
                    if !who.may_place_on(&p.cell) {
                        return Err(StateError::Forbidden(format!(
                            "{} may not place instances on cell {} (its token is bound to other cells)",
                            who.user, p.cell
                        )));
                    }
                    s.place_instance_as(
                        &a.guid,
                        &p.cell,
                        p.index,
                        p.runtime.as_deref(),
                        !who.is_admin(),
                    )
                })
                .await
            {
                Ok(p) => {
                    info!(instance = %p.guid, app = %p.app_guid, index = p.index, cell = %p.cell, "instance placed");
                    reply(
                        StatusCode::CREATED,
                        serde_json::to_value(p).unwrap_or_default(),
                    )
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::RemoveInstance(guid) => {
            let guid = guid.to_string();
            let who = caller.clone();
            match ctx
                .with_state(move |s| {
                    // Another space's instance is, to this caller, one that does not exist.
                    if !who.is_admin()
                        && !s
                            .placements(None)?
                            .iter()
                            .any(|p| p.guid == guid && who.may_manage(p.app_guid.as_str()))
                    {
                        return Ok(false);
                    }
                    s.remove_instance(&guid)
                })
                .await
            {
                Ok(removed) => typed(StatusCode::OK, &Removed { removed }),
                Err(e) => state_error(e),
            }
        }
        Endpoint::ListCells => {
            match ctx
                .with_state(|s| {
                    Ok((
                        s.cells()?,
                        s.leases()?,
                        s.placements(None)?,
                        s.lease_ttl_secs(),
                    ))
                })
                .await
            {
                Ok((cells, leases, placed, ttl)) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0);
                    let list: Vec<_> = cells
                        .iter()
                        .map(|c| {
                            let lease = leases.iter().find(|l| &l.cell == c).cloned();
                            CellRecord {
                                name: c.clone(),
                                healthy: lease
                                    .as_ref()
                                    .is_some_and(|l| l.renewed_at >= now - ttl as i64),
                                lease,
                                instances: placed.iter().filter(|p| &p.cell == c).count(),
                            }
                        })
                        .collect();
                    typed(StatusCode::OK, &CellList { cells: list })
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::RegisterCell => {
            // A cell's identity: its key stays on the cell; control signs its CSR with the cell
            // issuer (CN = the name, clientAuth only) and records the certificate's fingerprint,
            // so a re-registration revokes the previous certificate.
            let r: RegisterCell = match json_body(
                req,
                "{\"name\": \"...\", \"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}",
            )
            .await
            {
                Ok(r) => r,
                Err(r) => return r,
            };
            if let Err(e) = crate::state::validate_cell_name(&r.name) {
                return state_error(e);
            }
            let (chain, fp) = match sign_cell(ctx, &r.name, &r.csr) {
                Ok(x) => x,
                Err(resp) => return *resp,
            };
            let name = r.name.clone();
            match ctx.with_state(move |s| s.register_cell(&name, &fp)).await {
                Ok(()) => {
                    info!(cell = %r.name, "cell registered");
                    typed(
                        StatusCode::OK,
                        &Signed {
                            cert_pem: chain,
                            names: vec![],
                            root_pem: None,
                        },
                    )
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::RemoveCell(name) => {
            let name = name.to_string();
            let n2 = name.clone();
            match ctx.with_state(move |s| s.remove_cell(&n2)).await {
                Ok(true) => {
                    info!(cell = %name, "cell removed: certificate revoked, lease and instances freed");
                    typed(StatusCode::OK, &Empty {})
                }
                Ok(false) => error(StatusCode::NOT_FOUND, format!("no registered cell {name}")),
                Err(e) => state_error(e),
            }
        }
        Endpoint::ListLeases => match ctx.with_state(|s| s.leases()).await {
            Ok(l) => reply(StatusCode::OK, json!({ "leases": l })),
            Err(e) => state_error(e),
        },
        other => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {}", other.method(), other.path()),
        ),
    }
}
