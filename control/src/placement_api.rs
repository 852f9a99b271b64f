//! The platform API's placement and cell endpoints: instances (place, list, remove), cells
//! (register, list, remove) and leases, for the admin and, narrowed to their grants, users.

use hyper::{Request, StatusCode};
use serde_json::json;
use tracing::info;

use c2c_api::types::{
    CellList, CellRecord, Empty, PlaceRequest, PlacementList, RegisterCell, Removed, Signed,
};

use crate::auth::managed_app;
use crate::cell_api::sign_cell;
use crate::ctx::Ctx;
use crate::http::{error, json_body, typed, Answer, ApiError, ReqBody};
use crate::state::StateError;
use crate::tokens::Caller;

/// `GET /v1/instances`: every placed instance for the admin; a user's apps' otherwise.
pub(crate) async fn list_instances(ctx: &Ctx, caller: &Caller) -> Answer {
    let mut instances = ctx.with_state(|s| s.placements(None)).await?;
    instances.retain(|i| caller.may_manage(i.app_guid.as_str()));
    Ok(typed(StatusCode::OK, &PlacementList { instances }))
}

/// `POST /v1/apps/APP/instances`. Placement is the scheduler's (here: a user's token): a cell
/// may only confirm an instance placed on it, so it can obtain identities only for what runs
/// on it.
pub(crate) async fn place<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    caller: &Caller,
    app: String,
) -> Answer {
    let p: PlaceRequest = json_body(req, "{\"cell\": \"...\", \"index\": N (optional)}").await?;
    let who = caller.clone();
    let p = ctx
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
        .await?;
    info!(instance = %p.guid, app = %p.app_guid, index = p.index, cell = %p.cell, "instance placed");
    Ok(typed(StatusCode::CREATED, &p))
}

/// `DELETE /v1/instances/GUID`: another space's instance is, to a user, one that does not
/// exist.
pub(crate) async fn remove_instance(ctx: &Ctx, caller: &Caller, guid: String) -> Answer {
    let who = caller.clone();
    let removed = ctx
        .with_state(move |s| {
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
        .await?;
    Ok(typed(StatusCode::OK, &Removed { removed }))
}

/// `GET /v1/cells`: each registered cell, its lease, whether it renewed within the TTL, and
/// how many instances it holds.
pub(crate) async fn list_cells(ctx: &Ctx) -> Answer {
    let cells = cell_records(ctx).await?;
    Ok(typed(StatusCode::OK, &CellList { cells }))
}

/// Each registered cell, its lease, whether it renewed within the TTL, and how many instances
/// it holds (the cells list, and the console's cells page).
pub(crate) async fn cell_records(ctx: &Ctx) -> Result<Vec<CellRecord>, crate::state::StateError> {
    let (cells, leases, placed, ttl) = ctx
        .with_state(|s| {
            Ok((
                s.cells()?,
                s.leases()?,
                s.placements(None)?,
                s.lease_ttl_secs(),
            ))
        })
        .await?;
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
    Ok(list)
}

/// `POST /v1/cells`: a cell's identity. Its key stays on the cell; control signs its CSR with
/// the cell issuer (CN = the name, clientAuth only) and records the certificate's
/// fingerprint, so a re-registration revokes the previous certificate.
pub(crate) async fn register_cell<B: ReqBody>(req: Request<B>, ctx: &Ctx) -> Answer {
    let r: RegisterCell = json_body(
        req,
        "{\"name\": \"...\", \"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}",
    )
    .await?;
    crate::state::validate_cell_name(&r.name)?;
    let (chain, fp) = sign_cell(ctx, &r.name, &r.csr).map_err(ApiError::from)?;
    let name = r.name.clone();
    ctx.with_state(move |s| s.register_cell(&name, &fp)).await?;
    info!(cell = %r.name, "cell registered");
    Ok(typed(
        StatusCode::OK,
        &Signed {
            cert_pem: chain,
            names: vec![],
            root_pem: None,
        },
    ))
}

/// `DELETE /v1/cells/NAME`: its certificate revoked, its lease and instances freed.
pub(crate) async fn remove_cell(ctx: &Ctx, name: String) -> Answer {
    let n2 = name.clone();
    if !ctx.with_state(move |s| s.remove_cell(&n2)).await? {
        return Ok(error(
            StatusCode::NOT_FOUND,
            format!("no registered cell {name}"),
        ));
    }
    ctx.flows.forget(&name);
    info!(cell = %name, "cell removed: certificate revoked, lease and instances freed");
    Ok(typed(StatusCode::OK, &Empty {}))
}

/// `GET /v1/leases`.
pub(crate) async fn list_leases(ctx: &Ctx) -> Answer {
    let leases = ctx.with_state(|s| s.leases()).await?;
    Ok(typed(StatusCode::OK, &json!({ "leases": leases })))
}
