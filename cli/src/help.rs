//! Help as a cf user expects it: verbs grouped by what they act on (apps, routes, policies,
//! security groups, orgs and spaces, the local platform, the operator's), each verb's help
//! ending with examples and the related verbs of its group; and what an unknown verb gets.

use clap::Command;

/// The groups of `c2c --help`, in order, with their verbs: every visible verb is in one.
pub(crate) const GROUPS: &[(&str, &[&str])] = &[
    (
        "Apps",
        &[
            "push",
            "apps",
            "app",
            "scale",
            "stop",
            "start",
            "restart",
            "delete",
            "exec",
            "create-app",
            "update-app",
        ],
    ),
    ("Routes", &["map-route", "unmap-route", "routes"]),
    (
        "Network policies",
        &[
            "add-network-policy",
            "remove-network-policy",
            "network-policies",
            "flows",
        ],
    ),
    (
        "Security groups",
        &[
            "security-groups",
            "security-group",
            "create-security-group",
            "update-security-group",
            "delete-security-group",
            "bind-security-group",
            "unbind-security-group",
            "bind-running-security-group",
            "bind-staging-security-group",
            "unbind-running-security-group",
            "unbind-staging-security-group",
            "running-security-groups",
            "staging-security-groups",
        ],
    ),
    (
        "Orgs and spaces",
        &[
            "orgs",
            "create-org",
            "spaces",
            "create-space",
            "space-quotas",
            "set-space-quota",
        ],
    ),
    (
        "Local platform (needs root)",
        &["up", "down", "demo", "check", "network-logs", "metrics"],
    ),
    (
        "Operator",
        &[
            "control",
            "cell",
            "cells",
            "certs",
            "token",
            "tokens",
            "curl",
            "completion",
            "man",
        ],
    ),
];

/// Examples for the everyday verbs (what a user types first).
const EXAMPLES: &[(&str, &str)] = &[
    ("push", "c2c push appA\n  c2c push appB -i 3 --command 'python3 -m http.server 8080'\n  c2c push appB -i 1    # -i is the total: scales down to one"),
    ("apps", "c2c apps\n  c2c apps --json | jq -r '.apps[].name'"),
    ("app", "c2c app appB\n  c2c app appB --json | jq '.instances[] | {index, state, exit}'"),
    ("scale", "c2c scale appB -i 5"),
    ("stop", "c2c stop appB\n  c2c start appB"),
    ("start", "c2c start appB"),
    ("restart", "c2c restart appB"),
    ("delete", "c2c delete appB -f\n  c2c delete appB/2    # one instance; the app and its policies stay"),
    ("exec", "c2c exec appA -- curl -s http://appb.apps.internal:8080/\n  c2c exec appA/1 -- curl -s https://appb.apps.internal:61443/"),
    ("create-app", "c2c create-app appC\n  c2c create-app appC -o my-org -s dev"),
    ("update-app", "c2c update-app appB --client-identity required\n  c2c update-app grpc-server --app-protocol http2"),
    ("map-route", "c2c map-route appB apps.internal --hostname api"),
    ("unmap-route", "c2c unmap-route appB apps.internal --hostname api"),
    ("routes", "c2c routes\n  c2c routes --json"),
    ("add-network-policy", "c2c add-network-policy appA appB --protocol tcp --port 8080\n  c2c add-network-policy appA appB --port 61443    # the sidecar's TLS port"),
    ("remove-network-policy", "c2c remove-network-policy appA appB --protocol tcp --port 8080"),
    ("network-policies", "c2c network-policies\n  c2c network-policies --source appA --json"),
    ("security-groups", "c2c security-groups\n  c2c security-groups --json"),
    ("create-security-group", "c2c create-security-group dns rules.json\n  # rules.json: [{\"protocol\":\"udp\",\"destination\":\"10.0.0.2\",\"ports\":\"53\"}]"),
    ("bind-security-group", "c2c bind-security-group dns my-org --space dev"),
    ("create-org", "c2c create-org my-org"),
    ("create-space", "c2c create-space dev -o my-org"),
    ("set-space-quota", "c2c set-space-quota dev -o my-org --apps 50 -a 200 -r 100"),
    ("up", "c2c up\n  c2c up --cells 3 --log-c2c\n  c2c up --database-file /root/pg-url --replicas 2    # two control replicas on PostgreSQL"),
    ("metrics", "c2c metrics\n  c2c metrics cell1 | grep revision_applied"),
    ("down", "c2c down"),
    ("demo", "c2c demo"),
    ("check", "c2c check\n  c2c check --json | jq '.checks[] | select(.ok | not)'\n  c2c check --only deny-cross-cell,policy-enforced --keep"),
    ("network-logs", "c2c network-logs --app appB -f"),
    ("flows", "c2c flows --to appB --verdict deny\n  c2c flows --from appA --since 5m --follow\n  c2c flows --json | jq '.flows[] | select(.verdict == \"deny\")'"),
    ("token", "c2c token create alice --scope network.write --app appA"),
    ("tokens", "c2c tokens --json"),
    ("curl", "c2c curl /networking/v1/external/policies\n  c2c curl /networking/v1/external/policies -X POST -d @policies.json"),
    ("completion", "c2c completion bash > /etc/bash_completion.d/c2c"),
    ("man", "c2c man --out /usr/local/share/man/man1\n  man c2c-add-network-policy"),
    ("cells", "c2c cells --json"),
];

/// The group a verb is in.
fn group_of(verb: &str) -> Option<&'static (&'static str, &'static [&'static str])> {
    GROUPS.iter().find(|(_, verbs)| verbs.contains(&verb))
}

/// A verb's one-line summary: its about up to the first clause.
fn summary(about: &str) -> &str {
    let cut = [": ", ". ", "; ", " ("]
        .iter()
        .filter_map(|p| about.find(p))
        .min()
        .unwrap_or(about.len());
    about[..cut].trim_end_matches('.')
}

/// The top-level command with grouped verbs, and each verb's help ending in its examples and
/// related verbs.
pub(crate) fn decorate(mut cmd: Command) -> Command {
    let abouts: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| {
            (
                c.get_name().to_string(),
                c.get_about().map(|a| a.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    let width = abouts.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut grouped = String::new();
    for (title, verbs) in GROUPS {
        grouped.push_str(&format!("{title}:\n"));
        for v in *verbs {
            let about = abouts
                .iter()
                .find(|(n, _)| n == v)
                .map_or("", |(_, a)| summary(a));
            grouped.push_str(&format!("  {v:<width$}  {about}\n"));
        }
        grouped.push('\n');
    }
    cmd = cmd.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{grouped}`c2c VERB --help` shows a verb's flags, examples and related verbs.\n\nOptions:\n{{options}}{{after-help}}"
    ));
    for (name, _) in &abouts {
        let examples = EXAMPLES.iter().find(|(v, _)| v == name).map(|(_, e)| *e);
        let related: Vec<&str> = group_of(name)
            .map(|(_, verbs)| verbs.iter().copied().filter(|v| v != name).collect())
            .unwrap_or_default();
        let mut after = String::new();
        if let Some(e) = examples {
            after.push_str(&format!("Examples:\n  {e}\n"));
        }
        if !related.is_empty() {
            if !after.is_empty() {
                after.push('\n');
            }
            after.push_str(&format!("See also: {}\n", related.join(", ")));
        }
        after.push_str("\nExit codes: 0 done, 1 failed, 2 usage (see `c2c --help`).");
        cmd = cmd.mut_subcommand(name, |c| c.after_help(after));
    }
    cmd
}

/// Verbs that take something away: never suggested for a mistyped verb.
pub(crate) fn destructive(verb: &str) -> bool {
    verb == "down"
        || verb == "stop"
        || verb == "restart"
        || ["delete", "remove", "unmap", "unbind", "revoke"]
            .iter()
            .any(|p| verb.starts_with(p))
}

/// What `c2c VERB` with an unknown VERB prints (cf's words), with the suggestions that are not
/// destructive.
pub(crate) fn unknown_verb(verb: &str, suggested: &[String]) -> String {
    let safe: Vec<&String> = suggested.iter().filter(|s| !destructive(s)).collect();
    let mut out = format!("'{verb}' is not a registered command. See 'c2c --help'.");
    if !safe.is_empty() {
        out.push_str("\n\nDid you mean?");
        for s in safe {
            out.push_str(&format!("\n  {s}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_visible_verb_is_in_exactly_one_group() {
        let cmd = crate::args::Cli::command();
        let visible: Vec<&str> = cmd
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name())
            .collect();
        for v in &visible {
            let n = GROUPS.iter().filter(|(_, vs)| vs.contains(v)).count();
            assert_eq!(n, 1, "{v} is in {n} groups");
        }
        for (_, vs) in GROUPS {
            for v in *vs {
                assert!(visible.contains(v), "{v} is grouped but no verb");
            }
        }
        for (v, _) in EXAMPLES {
            assert!(visible.contains(v), "examples for {v}, which is no verb");
        }
    }

    #[test]
    fn destructive_verbs_are_never_suggested() {
        let out = unknown_verb("domains", &["down".into()]);
        assert_eq!(
            out,
            "'domains' is not a registered command. See 'c2c --help'."
        );
        let out = unknown_verb(
            "deletee",
            &["delete".into(), "delete-security-group".into()],
        );
        assert!(!out.contains("Did you mean"), "{out}");
        let out = unknown_verb("ap", &["app".into(), "apps".into()]);
        assert!(out.ends_with("Did you mean?\n  app\n  apps"), "{out}");
    }

    #[test]
    fn every_example_parses() {
        for (verb, text) in EXAMPLES {
            for line in text.lines() {
                let line = line.split("    #").next().unwrap().trim();
                if !line.starts_with("c2c ") {
                    continue;
                }
                let words = shell_words(line);
                let parsed = decorate(crate::args::Cli::command()).try_get_matches_from(&words);
                assert!(parsed.is_ok(), "{verb}: {line}: {}", parsed.unwrap_err());
            }
        }
    }

    /// Splits on spaces, keeping '...' quoted words whole; drops a `| ...` or `> ...` tail.
    fn shell_words(line: &str) -> Vec<String> {
        let line = line
            .split(" | ")
            .next()
            .unwrap()
            .split(" > ")
            .next()
            .unwrap();
        let mut out = vec![];
        let mut quoted = false;
        let mut cur = String::new();
        for ch in line.chars() {
            match ch {
                '\'' => quoted = !quoted,
                ' ' if !quoted => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    #[test]
    fn summaries_end_at_the_first_clause() {
        assert_eq!(
            summary("Create an app: policies name apps"),
            "Create an app"
        );
        assert_eq!(summary("List routes."), "List routes");
        assert_eq!(summary("Run it (needs root)"), "Run it");
    }
}
