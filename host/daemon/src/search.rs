//! Session search for the daemon: the index kept in `<data-dir>/search`, opened (and built
//! from the recordings when new) at start, fed as recordings are sealed, rebuilt by
//! `gatehouse session reindex`, searched by `gatehouse session search` and the API.

use crate::admin::AdminContext;
use anyhow::{Context, Result};
use gatehouse_core::SessionRecord;
use gatehouse_search::{Hit, SearchIndex, SessionMeta};
use gatehouse_store::{SESSIONS, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Every recorded session's metadata, oldest first.
fn all_sessions(store: &Store) -> Result<Vec<SessionMeta>> {
    let mut records: Vec<SessionRecord> = store.list(&SESSIONS)?;
    records.sort_by_key(|r| r.started);
    Ok(records.iter().map(SessionMeta::from).collect())
}

/// Opens the index at `dir` for the running gateway; a new one (first start, or one of an
/// older version) is filled from the recordings in the background while the gateway serves.
/// `None`, with the reason logged, when it cannot be opened: the gateway runs without search.
pub fn open_for_server(
    dir: &Path,
    store: &Arc<Store>,
    recordings: &Path,
) -> Option<Arc<SearchIndex>> {
    let (index, created) = match SearchIndex::open_or_create(dir) {
        Ok(opened) => opened,
        Err(e) => {
            tracing::error!(error = %e, "session search is off: the index cannot be opened");
            return None;
        }
    };
    let index = Arc::new(index);
    if created {
        let (index, store, recordings) = (index.clone(), store.clone(), recordings.to_path_buf());
        std::thread::spawn(move || match rebuild(&index, &store, &recordings) {
            Ok(summary) => tracing::info!(%summary, "search index built"),
            Err(e) => tracing::error!(error = %e, "building the search index"),
        });
    }
    Some(index)
}

/// Indexes a session whose recording was just sealed (complete).
pub fn index_sealed(index: &SearchIndex, recordings: &Path, record: &SessionRecord) {
    if let Err(e) = index.index_session(recordings, &SessionMeta::from(record)) {
        tracing::warn!(session = %record.id, error = %e, "indexing a recording for search");
    }
}

fn rebuild(index: &SearchIndex, store: &Store, recordings: &Path) -> Result<String> {
    let sessions = all_sessions(store)?;
    let started = Instant::now();
    let indexed = index.rebuild(recordings, &sessions, &mut |_| {})?;
    let seconds = started.elapsed().as_secs_f64();
    let mib = indexed.bytes as f64 / (1024.0 * 1024.0);
    let mut summary = format!(
        "indexed {} sessions with a recording of {} ({} fragments, {mib:.2} MiB of text) in \
         {seconds:.2} s",
        indexed.sessions,
        sessions.len(),
        indexed.fragments
    );
    if indexed.unreadable > 0 {
        summary.push_str(&format!(
            "; {} recordings could not be read (the gateway's log names them)",
            indexed.unreadable
        ));
    }
    Ok(summary)
}

/// `gatehouse session reindex`: in the running gateway with its index, or here with the data
/// directory's.
pub fn reindex(ctx: &AdminContext) -> Result<String> {
    let recordings = ctx
        .recordings
        .as_deref()
        .context("this command needs the data directory's recordings")?;
    let opened;
    let index = match &ctx.search {
        Some(index) if !index.dir().is_dir() => anyhow::bail!(
            "the search index at {} was removed while the gateway runs: restart the gateway, \
             which builds it anew",
            index.dir().display()
        ),
        Some(index) => index.as_ref(),
        None => {
            let dir = ctx
                .search_dir
                .as_deref()
                .context("this command needs the data directory")?;
            opened = SearchIndex::open_or_create(dir)?.0;
            &opened
        }
    };
    Ok(rebuild(index, &ctx.store, recordings)? + "\n")
}

/// The hits as a table for `gatehouse session search`: the match set off with « ».
pub fn hits_text(hits: &[Hit]) -> String {
    if hits.is_empty() {
        return "no session matched\n".into();
    }
    let mut out = String::new();
    for hit in hits {
        let mut snippet = String::new();
        let mut at = 0;
        for &(start, end) in &hit.highlights {
            if start < at || end > hit.snippet.len() {
                continue;
            }
            snippet.push_str(&hit.snippet[at..start]);
            snippet.push('«');
            snippet.push_str(&hit.snippet[start..end]);
            snippet.push('»');
            at = end;
        }
        snippet.push_str(&hit.snippet[at..]);
        let snippet: String = snippet.split_whitespace().collect::<Vec<_>>().join(" ");
        let node = hit
            .node
            .as_deref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{} {} {} {}{node} session {}",
            hit.at, hit.user, hit.protocol, hit.target, hit.session
        ));
        match (hit.channel, hit.cast_time) {
            (Some(channel), Some(from)) => out.push_str(&format!(
                " channel {channel} at +{from:.1}s ({}): gatehouse session play {} --channel {channel} --from {:.1}\n",
                hit.kind,
                hit.session,
                (from - 1.0).max(0.0)
            )),
            _ => out.push_str(&format!(" at +{:.1}s ({})\n", hit.time, hit.kind)),
        }
        out.push_str(&format!("    {snippet}\n"));
    }
    out
}
