//! One Cedar decision with 1,000 policies and 10,000 entities, and the cost of building a
//! request's entities. `cargo bench -p gatehouse-policy` prints criterion's estimates, then p50
//! and p99 over individually timed calls, and writes them to
//! `target/gatehouse-bench/policy.json`. See docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The gateway's allocator (host/cli/src/main.rs), so the figures are what the gateway gets.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cedar_policy::{Context, Entities, EntityUid};
use criterion::Criterion;
use gatehouse_core::time::Timestamp;
use gatehouse_core::{Account, Asset, AssetGroup, Group, HostKeyPolicy, Name, TargetSpec, User};
use gatehouse_policy::context::{self, ContextRefs, SessionFacts};
use gatehouse_policy::entities::{EntityBuilder, MemoryDirectory};
use gatehouse_policy::load::{self, Source};
use gatehouse_policy::{Clock, EngineSettings, PolicyBundle, PolicyEngine, Query};
use gatehouse_store::{ACCOUNTS, ASSET_GROUPS, ASSETS, GROUPS, Store, USERS, account_key};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const USERS_N: usize = 3_555;
const TOP_GROUPS: usize = 30;
const GROUPS_N: usize = 300;
const TOP_ASSET_GROUPS: usize = 15;
const ASSET_GROUPS_N: usize = 150;
const ASSETS_N: usize = 1_500;
const ACCOUNTS_PER_ASSET: usize = 3;

fn n(s: String) -> Name {
    Name::new(&s).unwrap()
}

/// 10,005 records: users in nested groups, accounts on assets in nested asset groups.
fn directory() -> MemoryDirectory {
    let mut d = MemoryDirectory::default();
    for g in 0..GROUPS_N {
        let parents = if g < TOP_GROUPS {
            vec![]
        } else {
            vec![n(format!("g{}", g % TOP_GROUPS))]
        };
        d.groups.insert(
            format!("g{g}"),
            Group {
                name: n(format!("g{g}")),
                description: String::new(),
                parents,
                created: Timestamp(0),
            },
        );
    }
    for u in 0..USERS_N {
        d.users.insert(
            format!("u{u}"),
            User {
                name: n(format!("u{u}")),
                password_hash: None,
                public_keys: vec![],
                groups: vec![
                    n(format!("g{}", TOP_GROUPS + u % (GROUPS_N - TOP_GROUPS))),
                    n(format!(
                        "g{}",
                        TOP_GROUPS + (u * 7) % (GROUPS_N - TOP_GROUPS)
                    )),
                ],
                email: None,
                rdp_secret: None,
                created: Timestamp(0),
            },
        );
    }
    for g in 0..ASSET_GROUPS_N {
        let parents = if g < TOP_ASSET_GROUPS {
            vec![]
        } else {
            vec![n(format!("ag{}", g % TOP_ASSET_GROUPS))]
        };
        d.asset_groups.insert(
            format!("ag{g}"),
            AssetGroup {
                name: n(format!("ag{g}")),
                description: String::new(),
                parents,
                created: Timestamp(0),
            },
        );
    }
    for a in 0..ASSETS_N {
        d.assets.insert(
            format!("h{a}"),
            Asset {
                name: n(format!("h{a}")),
                address: format!("10.0.{}.{}", a / 250, a % 250),
                port: 22,
                host_key: HostKeyPolicy::TrustOnFirstUse,
                rdp: None,
                telnet: None,
                vnc: None,
                groups: vec![n(format!(
                    "ag{}",
                    TOP_ASSET_GROUPS + a % (ASSET_GROUPS_N - TOP_ASSET_GROUPS)
                ))],
                created: Timestamp(0),
            },
        );
        for k in 0..ACCOUNTS_PER_ASSET {
            let name = format!("acct{k}");
            d.accounts.insert(
                account_key(&format!("h{a}"), &name),
                Account {
                    name: n(name),
                    asset: n(format!("h{a}")),
                    id: format!("id-{a}-{k}"),
                    password: None,
                    private_key: None,
                    credential_plugin: None,
                    created: Timestamp(0),
                    change_after_checkin: false,
                    change_due: None,
                    secret_updated: Timestamp(0),
                },
            );
        }
    }
    d
}

fn entity_count(d: &MemoryDirectory) -> usize {
    d.users.len() + d.groups.len() + d.assets.len() + d.asset_groups.len() + d.accounts.len()
}

/// 1,000 policies of the shapes a real deployment has.
fn policies() -> String {
    let mut out = String::from(gatehouse_policy::schema::BASE_POLICY);
    let mut count = 1; // base.cedar's static policy; its template is not counted
    // Group -> asset group session rights in business hours.
    for i in 0..500 {
        out.push_str(&format!(
            "@id(\"team-{i}\")\npermit (principal in Group::\"g{}\", action in Action::\"session\", resource in AssetGroup::\"ag{}\")\nwhen {{ [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"].contains(context.time.weekday) && context.time.hour >= 7 && context.time.hour < 19 }};\n",
            i % GROUPS_N,
            i % ASSET_GROUPS_N
        ));
        count += 1;
    }
    // Personal rights on single accounts, some needing MFA.
    for i in 0..300 {
        out.push_str(&format!(
            "@id(\"personal-{i}\")\npermit (principal == User::\"u{}\", action == Action::\"ssh_session\", resource == Account::\"acct{}@h{}\")\nwhen {{ context.authenticated_with.contains(\"publickey\") || context.authenticated_with.contains(\"totp-mfa\") }};\n",
            (i * 11) % USERS_N,
            i % ACCOUNTS_PER_ASSET,
            (i * 5) % ASSETS_N
        ));
        count += 1;
    }
    // Network restrictions per asset group.
    for i in 0..150 {
        out.push_str(&format!(
            "@id(\"net-{i}\")\nforbid (principal, action in Action::\"session\", resource in AssetGroup::\"ag{}\")\nunless {{ context.client.ip.isInRange(ip(\"10.0.0.0/8\")) || context.client.ip.isLoopback() }};\n",
            i % ASSET_GROUPS_N
        ));
        count += 1;
    }
    // Channel rules scoped only by action.
    for i in 0..40 {
        out.push_str(&format!(
            "@id(\"exec-{i}\")\nforbid (principal, action == Action::\"ssh_exec\", resource)\nwhen {{ context.channel has command && context.channel.command like \"forbidden-{i} *\" }};\n"
        ));
        count += 1;
    }
    // Gateway-wide rules.
    for i in 0..(1_000 - count) {
        out.push_str(&format!(
            "@id(\"global-{i}\")\nforbid (principal, action in Action::\"session\", resource)\nwhen {{ context.session.hasTag(\"deny-{i}\") }};\n"
        ));
    }
    out
}

fn facts(clock: &Clock) -> SessionFacts {
    SessionFacts {
        session_id: "bench".into(),
        protocol: "ssh".into(),
        client: "10.2.3.4:50000".parse().unwrap(),
        pairs: vec![("ticket".into(), "INC-1".into())],
        authenticated_with: vec!["password".into()],
        ticket_verified: false,
        time: clock.parse("2026-11-24T10:00").unwrap(),
        node: None,
        destination: None,
    }
}

struct Built {
    entities: Entities,
    principal: EntityUid,
    resource: EntityUid,
    refs: ContextRefs,
}

fn build(d: &MemoryDirectory, user: &str, asset: &str, account: &str, f: &SessionFacts) -> Built {
    let mut b = EntityBuilder::new();
    let principal = b.user(d, &d.users[user]).unwrap();
    let resource = b
        .account(
            d,
            &d.assets[asset],
            &d.accounts[&account_key(asset, account)],
        )
        .unwrap();
    let refs = ContextRefs {
        gateway: b.gateway("gw1").unwrap(),
        session: b.session(&f.session_id, &f.pairs).unwrap(),
        request: None,
        node: None,
    };
    Built {
        entities: b.build().unwrap(),
        principal,
        resource,
        refs,
    }
}

fn percentiles(mut samples: Vec<u128>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

fn timed(iterations: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..iterations / 10 {
        f();
    }
    let samples = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos()
        })
        .collect();
    percentiles(samples)
}

fn store_with(d: &MemoryDirectory, dir: &std::path::Path) -> Arc<Store> {
    let store = Arc::new(Store::open(&dir.join("bench.redb")).unwrap());
    store
        .write(|t| -> Result<(), gatehouse_store::StoreError> {
            for (k, v) in &d.users {
                t.put(&USERS, k, v)?;
            }
            for (k, v) in &d.groups {
                t.put(&GROUPS, k, v)?;
            }
            for (k, v) in &d.assets {
                t.put(&ASSETS, k, v)?;
            }
            for (k, v) in &d.asset_groups {
                t.put(&ASSET_GROUPS, k, v)?;
            }
            for (k, v) in &d.accounts {
                t.put(&ACCOUNTS, k, v)?;
            }
            Ok(())
        })
        .unwrap();
    store
}

fn main() {
    let dir = directory();
    let text = policies();
    let bundle: PolicyBundle = load::compile(
        &[Source {
            name: "bench.cedar".into(),
            text: text.clone(),
        }],
        &[],
    )
    .unwrap();
    assert_eq!(bundle.policy_count(), 1_000);
    assert_eq!(entity_count(&dir), 10_005);
    let clock = Clock::new(Some("UTC")).unwrap();
    let f = facts(&clock);
    // u1 is in g31 and g37 (under g1, g7); h16 is in ag31 (under ag1).
    let (user, asset, account) = ("u1", "h16", "acct1");
    let built = build(&dir, user, asset, account, &f);
    let action =
        gatehouse_policy::schema::uid(gatehouse_policy::schema::Kind::Action, "ssh_session")
            .unwrap();
    let ctx: Context = context::context(context::access_value(&f, &built.refs), &action).unwrap();
    let decide = |sliced: bool| {
        let q = Query {
            principal: &built.principal,
            action: &action,
            resource: &built.resource,
            context: ctx.clone(),
            entities: &built.entities,
        };
        if sliced {
            bundle.decide(q).unwrap()
        } else {
            bundle.decide_unsliced(q).unwrap()
        }
    };
    // The same request in a session carrying all nine `deny-N` tags: the guards cannot leave
    // the tag forbids out, so Cedar gets all 15 policies the scope lets through (and denies).
    let tagged_facts = SessionFacts {
        pairs: (0..9)
            .map(|i| (format!("deny-{i}"), "1".to_string()))
            .collect(),
        ..f.clone()
    };
    let tagged = build(&dir, user, asset, account, &tagged_facts);
    let tagged_ctx: Context =
        context::context(context::access_value(&tagged_facts, &tagged.refs), &action).unwrap();
    let decide_tagged = || {
        bundle
            .decide(Query {
                principal: &tagged.principal,
                action: &action,
                resource: &tagged.resource,
                context: tagged_ctx.clone(),
                entities: &tagged.entities,
            })
            .unwrap()
    };
    assert!(!decide_tagged().allowed, "all nine tag forbids apply");
    let decision = decide(true);
    assert_eq!(
        decision,
        decide(false),
        "the index must not change the decision"
    );
    println!(
        "request: {user} ssh_session acct1@{asset}: {} by {:?}",
        if decision.allowed { "allow" } else { "deny" },
        decision.policies
    );

    let tmp = tempfile::tempdir().unwrap();
    let store = store_with(&dir, tmp.path());
    let policy_dir = tmp.path().join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::write(policy_dir.join("bench.cedar"), &text).unwrap();
    let engine = PolicyEngine::open(
        EngineSettings {
            policy_dir,
            gateway: "gw1".into(),
            time_zone: Some("UTC".into()),
        },
        store.clone(),
    )
    .unwrap();
    let target: TargetSpec = format!("{account}@{asset}").parse().unwrap();
    let user_record = dir.users[user].clone();

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("decision (index, 1,000 policies)", |b| {
        b.iter(|| black_box(decide(true)))
    });
    c.bench_function("decision (whole set, 1,000 policies)", |b| {
        b.iter(|| black_box(decide(false)))
    });
    c.bench_function("entities for one request (in memory)", |b| {
        b.iter(|| black_box(build(&dir, user, asset, account, &f)))
    });
    c.bench_function(
        "session authorization (redb store, entities, context, decision)",
        |b| {
            b.iter(|| {
                black_box(
                    engine
                        .authorize_session(&user_record, &target, f.clone())
                        .is_ok(),
                )
            })
        },
    );
    c.final_summary();

    let n = 20_000;
    let rows = [
        ("decision_index", timed(n, || drop(black_box(decide(true))))),
        (
            "decision_index_unguardable",
            timed(n, || drop(black_box(decide_tagged()))),
        ),
        (
            "decision_whole_set",
            timed(n / 10, || drop(black_box(decide(false)))),
        ),
        (
            "entities_in_memory",
            timed(n, || drop(black_box(build(&dir, user, asset, account, &f)))),
        ),
        (
            "session_authorization_from_store",
            timed(n, || {
                drop(black_box(engine.authorize_session(
                    &user_record,
                    &target,
                    f.clone(),
                )))
            }),
        ),
    ];
    let mut json = serde_json::Map::new();
    println!("\n{:<36} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    for (name, (p50, p99)) in rows {
        println!("{name:<36} {p50:>10.1} {p99:>10.1}");
        json.insert(
            name.into(),
            serde_json::json!({ "p50_us": p50, "p99_us": p99 }),
        );
    }
    json.insert("policies".into(), 1_000.into());
    json.insert("entities".into(), entity_count(&dir).into());
    let out_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/gatehouse-bench");
    let _ = std::fs::create_dir_all(&out_dir);
    let _ = std::fs::write(
        out_dir.join("policy.json"),
        serde_json::to_vec_pretty(&serde_json::Value::Object(json)).unwrap(),
    );
}
