//! The state layer's conformance suite: every scenario runs against each engine (SQLite always;
//! PostgreSQL in `tests/state_conformance.rs`, on a cluster the test starts), so both backends
//! keep one behaviour: revisions, tags, leases, routes, policies, cells, tokens.
#![allow(missing_docs)]

use std::net::Ipv4Addr;

use c2c_api::net::PortRange;
use c2c_api::types::{Scope, Tag};
use c2c_control::state::*;

/// Opens the scenario's store (the same one each call) with an overlay and a lease TTL.
pub type Opener<'a> = &'a dyn Fn((Ipv4Addr, u8), u64) -> State;

/// The overlay most scenarios use.
pub const OVERLAY: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 255, 0, 0), 16);

/// A named scenario.
pub type Scenario = (&'static str, fn(Opener));

mod apps;
mod asg;
mod budgets;
mod cells;
pub use apps::*;
pub use asg::*;
pub use budgets::*;
pub use cells::*;

/// Every scenario, by name.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        (
            "placements_no_cell_confirms_expire",
            placements_no_cell_confirms_expire,
        ),
        (
            "tag_groups_and_spaces_have_budgets",
            tag_groups_and_spaces_have_budgets,
        ),
        (
            "security_groups_bind_to_spaces_and_reach_the_cells_view",
            security_groups_bind_to_spaces_and_reach_the_cells_view,
        ),
        (
            "many_policies_go_in_batches_and_count_right",
            many_policies_go_in_batches_and_count_right,
        ),
        (
            "cell_subnets_have_the_configured_size_and_never_overlap",
            cell_subnets_have_the_configured_size_and_never_overlap,
        ),
        (
            "a_shared_view_gives_each_cell_what_its_own_would",
            a_shared_view_gives_each_cell_what_its_own_would,
        ),
        (
            "probes_reach_their_cells_view_at_once_within_a_budget",
            probes_reach_their_cells_view_at_once_within_a_budget,
        ),
        (
            "leases_expire_unless_renewed_and_come_back_where_they_were",
            leases_expire_unless_renewed_and_come_back_where_they_were,
        ),
        (
            "join_tokens_are_used_once_and_expire",
            join_tokens_are_used_once_and_expire,
        ),
        (
            "routes_are_validated_and_follow_apps",
            routes_are_validated_and_follow_apps,
        ),
        (
            "tags_are_unique_and_reused_after_delete",
            tags_are_unique_and_reused_after_delete,
        ),
        (
            "every_change_bumps_the_revision_and_no_ops_do_not",
            every_change_bumps_the_revision_and_no_ops_do_not,
        ),
        (
            "deleting_an_app_drops_its_policies_and_instances",
            deleting_an_app_drops_its_policies_and_instances,
        ),
        (
            "only_the_placed_cell_confirms_an_instance_at_a_free_address_of_its_lease",
            only_the_placed_cell_confirms_an_instance_at_a_free_address_of_its_lease,
        ),
        (
            "cells_are_registered_by_fingerprint_and_removal_frees_everything",
            cells_are_registered_by_fingerprint_and_removal_frees_everything,
        ),
        (
            "leases_need_a_host_address_no_live_cell_holds",
            leases_need_a_host_address_no_live_cell_holds,
        ),
        (
            "internal_domains_are_private_and_app_names_start_with_a_letter_or_digit",
            internal_domains_are_private_and_app_names_start_with_a_letter_or_digit,
        ),
        (
            "leases_are_sticky_and_expired_ones_reclaimed_oldest_first",
            leases_are_sticky_and_expired_ones_reclaimed_oldest_first,
        ),
        (
            "tags_share_one_space_and_print_as_cf_does",
            tags_share_one_space_and_print_as_cf_does,
        ),
        (
            "last_updated_moves_on_every_policy_change_only",
            last_updated_moves_on_every_policy_change_only,
        ),
        (
            "tokens_are_kept_hashed_and_grants_follow_apps",
            tokens_are_kept_hashed_and_grants_follow_apps,
        ),
    ]
}
