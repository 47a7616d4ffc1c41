//! Full-text search over recorded sessions, with tantivy (the only crate that knows it).
//!
//! The index is a derived copy: every document is a fragment of one session's recording
//! ([`extract`]): terminal output, echoed typed lines, commands, file names, RDP typing and
//! clipboard text, each with the moment it happened, so a hit opens the recording there. It
//! can be thrown away and rebuilt from the recordings at any time ([`SearchIndex::rebuild`]).
//! It holds no secrets: typed input is indexed only where the terminal echoed it, and the
//! credentials Gatehouse injects never reach a recording.
//!
//! Query syntax ([`SearchIndex::search`]): words and `"quoted phrases"` match what a session
//! showed or had typed (`text:` output and events only, `input:` echoed typed lines only);
//! `user:`, `target:` (`account@asset`), `asset:`, `account:`, `node:`, `protocol:`, `kind:`,
//! `session:` narrow; `after:` and `before:` take a date, a time or an age (`7d`) and bound
//! when the matched thing happened; `AND`, `OR`, `-word` and parentheses as tantivy's query
//! language has them. Words must all match unless joined with `OR`.

pub mod extract;

use gatehouse_core::SessionRecord;
use gatehouse_core::time::Timestamp;
use gatehouse_recording::RecordedSession;
use serde::Serialize;
use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermSetQuery};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, INDEXED, STORED, STRING, Schema, TEXT, Value,
};
use tantivy::{DateTime, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Bumped when the schema or what is extracted changes: an index of another version is rebuilt.
const SCHEMA_VERSION: u32 = 1;
const VERSION_FILE: &str = "gatehouse-search.json";
/// The writer's memory budget: one thread, bounded.
const WRITER_BYTES: usize = 32 * 1024 * 1024;
/// Characters of context around a hit.
const SNIPPET_CHARS: usize = 160;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query could not be read; the text says where and why.
    #[error("the query cannot be read: {0}")]
    Query(String),
    /// Another process is writing to the index (the running gateway keeps it current).
    #[error(
        "the search index at {0} is being written by another process (the running gateway?): \
         ask it instead, or stop it first"
    )]
    Busy(PathBuf),
    /// There is no index here yet.
    #[error("there is no search index at {0} yet: `gatehouse session reindex` builds it")]
    Missing(PathBuf),
    /// The index was built by another version of Gatehouse.
    #[error(
        "the search index at {0} was built by another version: `gatehouse session reindex` \
         rebuilds it"
    )]
    Outdated(PathBuf),
    #[error("reading the recording of session {session}: {error}")]
    Recording {
        session: String,
        error: gatehouse_recording::RecordingError,
    },
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
}

/// What is known of a session besides its recording.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    pub id: String,
    pub user: String,
    pub account: String,
    pub asset: String,
    pub protocol: String,
    /// The session node that ran it; `None`: this gateway.
    pub node: Option<String>,
    pub started: Timestamp,
}

impl From<&SessionRecord> for SessionMeta {
    fn from(record: &SessionRecord) -> Self {
        SessionMeta {
            id: record.id.clone(),
            user: record.user.clone(),
            account: record.account.clone(),
            asset: record.asset.clone(),
            protocol: record.protocol.clone(),
            node: record.node.clone(),
            started: record.started,
        }
    }
}

/// One match: a moment of a session.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub session: String,
    pub user: String,
    /// `account@asset`.
    pub target: String,
    pub protocol: String,
    /// The session node that ran it; absent: this gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `output`, `input`, `command`, `file`, `keys` or `clipboard`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<u32>,
    /// Seconds since the session's recording started (the clock of its events).
    pub time: f64,
    /// Seconds into the channel's terminal recording (output and input hits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cast_time: Option<f64>,
    /// When it happened (RFC 3339).
    pub at: String,
    /// The matched text with some context; `highlights` are byte ranges in it.
    pub snippet: String,
    pub highlights: Vec<(usize, usize)>,
    pub score: f32,
}

/// How much an indexing run did.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Indexed {
    pub sessions: u64,
    pub fragments: u64,
    /// Bytes of searchable text.
    pub bytes: u64,
    /// Sessions whose recording could not be read (logged; the others are indexed).
    pub unreadable: u64,
}

#[derive(Clone, Copy)]
struct Fields {
    session: Field,
    user: Field,
    target: Field,
    account: Field,
    asset: Field,
    node: Field,
    protocol: Field,
    kind: Field,
    channel: Field,
    time: Field,
    cast_time: Field,
    at: Field,
    text: Field,
    input: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let date = DateOptions::from(INDEXED)
        .set_stored()
        .set_fast()
        .set_precision(DateTimePrecision::Milliseconds);
    let fields = Fields {
        session: builder.add_text_field("session", STRING | STORED),
        user: builder.add_text_field("user", STRING | STORED),
        target: builder.add_text_field("target", STRING | STORED),
        account: builder.add_text_field("account", STRING),
        asset: builder.add_text_field("asset", STRING),
        node: builder.add_text_field("node", STRING | STORED),
        protocol: builder.add_text_field("protocol", STRING | STORED),
        kind: builder.add_text_field("kind", STRING | STORED),
        channel: builder.add_u64_field("channel", STORED),
        time: builder.add_f64_field("time", STORED),
        cast_time: builder.add_f64_field("cast_time", STORED),
        at: builder.add_date_field("at", date),
        text: builder.add_text_field("text", TEXT | STORED),
        input: builder.add_text_field("input", TEXT | STORED),
    };
    (builder.build(), fields)
}

/// The search index of a gateway's recordings, in a directory of its own.
pub struct SearchIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// Taken on the first write: one process writes at a time.
    writer: Mutex<Option<IndexWriter>>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn version_text() -> String {
    format!("{{\"version\":{SCHEMA_VERSION}}}\n")
}

impl SearchIndex {
    /// Opens the index at `dir`, creating an empty one when there is none (or one of another
    /// version, which is replaced). Returns whether it was created: a new index needs
    /// [`SearchIndex::rebuild`] to know the sessions recorded before it.
    pub fn open_or_create(dir: &Path) -> Result<(Self, bool), SearchError> {
        let current = std::fs::read_to_string(dir.join(VERSION_FILE)).ok();
        let created = current.as_deref() != Some(version_text().as_str());
        if created {
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
            std::fs::create_dir_all(dir)?;
            let (schema, _) = schema();
            Index::create_in_dir(dir, schema)?;
            std::fs::write(dir.join(VERSION_FILE), version_text())?;
        }
        Ok((Self::open_existing(dir)?, created))
    }

    /// Opens the index at `dir` to search it (another process may be writing it).
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        match std::fs::read_to_string(dir.join(VERSION_FILE)) {
            Ok(text) if text == version_text() => Self::open_existing(dir),
            Ok(_) => Err(SearchError::Outdated(dir.to_path_buf())),
            Err(_) => Err(SearchError::Missing(dir.to_path_buf())),
        }
    }

    fn open_existing(dir: &Path) -> Result<Self, SearchError> {
        let index = Index::open_in_dir(dir)?;
        let (_, fields) = schema();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()?;
        Ok(SearchIndex {
            dir: dir.to_path_buf(),
            index,
            reader,
            fields,
            writer: Mutex::new(None),
        })
    }

    /// The directory the index is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn with_writer<T>(
        &self,
        work: impl FnOnce(&mut IndexWriter) -> Result<T, SearchError>,
    ) -> Result<T, SearchError> {
        let mut guard = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            let writer = self
                .index
                .writer_with_num_threads(1, WRITER_BYTES)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => SearchError::Busy(self.dir.clone()),
                    other => SearchError::Index(other),
                })?;
            *guard = Some(writer);
        }
        match guard.as_mut() {
            Some(writer) => {
                let result = work(writer);
                if result.is_err() {
                    // Leave nothing half-added for the next commit.
                    let _ = writer.rollback();
                }
                result
            }
            None => Err(SearchError::Busy(self.dir.clone())),
        }
    }

    /// Adds session `meta`'s fragments to the writer, after deleting what it had.
    fn add_session(
        &self,
        writer: &mut IndexWriter,
        recordings: &Path,
        meta: &SessionMeta,
    ) -> Result<Indexed, SearchError> {
        let f = self.fields;
        writer.delete_term(Term::from_field_text(f.session, &meta.id));
        let recorded = match RecordedSession::open(recordings, &meta.id) {
            Ok(recorded) => recorded,
            // No recording (a refused session, or one never recorded): nothing to find.
            Err(_) => return Ok(Indexed::default()),
        };
        let mut indexed = Indexed {
            sessions: 1,
            ..Indexed::default()
        };
        let target = format!("{}@{}", meta.account, meta.asset);
        // Fragments go to the writer as they are read: memory holds one, whatever the size of
        // the recording.
        let mut failed = None;
        let mut add = |fragment: extract::Fragment| {
            if failed.is_some() {
                return;
            }
            indexed.fragments += 1;
            indexed.bytes += fragment.text.len() as u64;
            let mut doc = TantivyDocument::default();
            doc.add_text(f.session, &meta.id);
            doc.add_text(f.user, &meta.user);
            doc.add_text(f.target, &target);
            doc.add_text(f.account, &meta.account);
            doc.add_text(f.asset, &meta.asset);
            if let Some(node) = &meta.node {
                doc.add_text(f.node, node);
            }
            doc.add_text(f.protocol, &meta.protocol);
            doc.add_text(f.kind, fragment.kind.name());
            if let Some(channel) = fragment.channel {
                doc.add_u64(f.channel, u64::from(channel));
            }
            doc.add_f64(f.time, fragment.time);
            if let Some(cast_time) = fragment.cast_time {
                doc.add_f64(f.cast_time, cast_time);
            }
            let at_millis = meta
                .started
                .0
                .saturating_add((fragment.time.max(0.0) * 1000.0) as u64);
            doc.add_date(f.at, date(at_millis));
            let field = match fragment.kind {
                extract::FragmentKind::Input => f.input,
                _ => f.text,
            };
            doc.add_text(field, &fragment.text);
            if let Err(e) = writer.add_document(doc) {
                failed = Some(e);
            }
        };
        extract::fragments(&recorded, &mut add).map_err(|error| SearchError::Recording {
            session: meta.id.clone(),
            error,
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(indexed)
    }

    fn commit(&self, writer: &mut IndexWriter) -> Result<(), SearchError> {
        writer.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Indexes (or re-indexes) one session's recording under `recordings` and commits.
    pub fn index_session(
        &self,
        recordings: &Path,
        meta: &SessionMeta,
    ) -> Result<Indexed, SearchError> {
        self.with_writer(|writer| {
            let indexed = self.add_session(writer, recordings, meta)?;
            self.commit(writer)?;
            Ok(indexed)
        })
    }

    /// Throws the index's content away and indexes every session in `sessions` from its
    /// recording; `progress` is told after each session. A recording that cannot be read is
    /// logged, counted and skipped. One commit at the end: a search meanwhile sees the old index.
    pub fn rebuild(
        &self,
        recordings: &Path,
        sessions: &[SessionMeta],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Indexed, SearchError> {
        self.with_writer(|writer| {
            writer.delete_all_documents()?;
            let mut total = Indexed::default();
            for (done, meta) in sessions.iter().enumerate() {
                match self.add_session(writer, recordings, meta) {
                    Ok(indexed) => {
                        total.sessions += indexed.sessions;
                        total.fragments += indexed.fragments;
                        total.bytes += indexed.bytes;
                    }
                    Err(SearchError::Recording { session, error }) => {
                        tracing::warn!(session, %error, "a recording cannot be indexed");
                        total.unreadable += 1;
                    }
                    Err(other) => return Err(other),
                }
                progress(done + 1);
            }
            self.commit(writer)?;
            Ok(total)
        })
    }

    /// The best `limit` hits of `query` (the syntax in the crate's documentation) among the
    /// sessions in `allowed` (all when `None`), best first.
    pub fn search(
        &self,
        query: &str,
        allowed: Option<&HashSet<String>>,
        limit: usize,
    ) -> Result<Vec<Hit>, SearchError> {
        let f = self.fields;
        let parsed = self.parse(query)?;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, parsed)];
        if let Some(allowed) = allowed {
            if allowed.is_empty() {
                return Ok(Vec::new());
            }
            let terms = allowed
                .iter()
                .map(|id| Term::from_field_text(f.session, id));
            clauses.push((Occur::Must, Box::new(TermSetQuery::new(terms))));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit.max(1)).order_by_score())?;
        let mut text_snippets =
            tantivy::snippet::SnippetGenerator::create(&searcher, &query, f.text)?;
        text_snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut input_snippets =
            tantivy::snippet::SnippetGenerator::create(&searcher, &query, f.input)?;
        input_snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let number = |field| doc.get_first(field).and_then(|v| v.as_f64());
            let kind = text(f.kind).unwrap_or_default();
            let generator = if kind == "input" {
                &input_snippets
            } else {
                &text_snippets
            };
            let snippet = generator.snippet_from_doc(&doc);
            let whole = text(if kind == "input" { f.input } else { f.text }).unwrap_or_default();
            let (snippet_text, highlights) = if snippet.fragment().is_empty() {
                // A query of fields alone (`user:alice`): the fragment's start.
                let mut end = whole.len().min(SNIPPET_CHARS);
                while !whole.is_char_boundary(end) {
                    end -= 1;
                }
                (whole[..end].to_string(), Vec::new())
            } else {
                (
                    snippet.fragment().to_string(),
                    merge_highlights(snippet.fragment(), snippet.highlighted()),
                )
            };
            let at = doc
                .get_first(f.at)
                .and_then(|v| v.as_datetime())
                .map(|at| {
                    let millis = u64::try_from(at.into_timestamp_millis()).unwrap_or(0);
                    humantime::format_rfc3339_millis(Timestamp(millis).to_system_time()).to_string()
                })
                .unwrap_or_default();
            hits.push(Hit {
                session: text(f.session).unwrap_or_default(),
                user: text(f.user).unwrap_or_default(),
                target: text(f.target).unwrap_or_default(),
                protocol: text(f.protocol).unwrap_or_default(),
                node: text(f.node),
                kind,
                channel: doc
                    .get_first(f.channel)
                    .and_then(|v| v.as_u64())
                    .and_then(|c| u32::try_from(c).ok()),
                time: number(f.time).unwrap_or(0.0),
                cast_time: number(f.cast_time),
                at,
                snippet: snippet_text,
                highlights,
                score,
            });
        }
        Ok(hits)
    }

    /// How many fragments the index holds (every session's, committed).
    pub fn fragments(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The query, parsed: `after:`/`before:` become a range on when things happened, the rest
    /// goes to tantivy's parser over the text fields, every word required.
    fn parse(&self, query: &str) -> Result<Box<dyn Query>, SearchError> {
        let f = self.fields;
        let mut rest = Vec::new();
        let mut after = Bound::Unbounded;
        let mut before = Bound::Unbounded;
        for token in tokens(query) {
            let lower = token.to_ascii_lowercase();
            let (bound, value) = if let Some(value) = lower.strip_prefix("after:") {
                (&mut after, &token[token.len() - value.len()..])
            } else if let Some(value) = lower.strip_prefix("before:") {
                (&mut before, &token[token.len() - value.len()..])
            } else {
                rest.push(token);
                continue;
            };
            let value = value.trim_matches('"');
            let name = if lower.starts_with("after:") {
                "after:"
            } else {
                "before:"
            };
            if value.is_empty() {
                return Err(SearchError::Query(format!(
                    "{name} needs a date (2026-12-01), a time (2026-12-01T08:00:00Z) or an age (7d)"
                )));
            }
            let moment = Timestamp::parse_moment(value)
                .map_err(|e| SearchError::Query(format!("{name} {e}")))?;
            *bound = Bound::Included(Term::from_field_date(f.at, date(moment.0)));
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let rest = rest.join(" ");
        if !rest.trim().is_empty() {
            let mut parser = QueryParser::for_index(&self.index, vec![f.text, f.input]);
            parser.set_conjunction_by_default();
            let parsed = parser.parse_query(&rest).map_err(|e| {
                SearchError::Query(format!(
                    "`{rest}`: {e} (fields: text, input, user, target, account, asset, node, \
                     protocol, kind, session; after:, before:)"
                ))
            })?;
            clauses.push((Occur::Must, parsed));
        }
        if !matches!((&after, &before), (Bound::Unbounded, Bound::Unbounded)) {
            clauses.push((Occur::Must, Box::new(RangeQuery::new(after, before))));
        }
        if clauses.is_empty() {
            return Err(SearchError::Query(
                "an empty query: give words, \"a phrase\" or fields such as user:alice".into(),
            ));
        }
        Ok(Box::new(BooleanQuery::new(clauses)))
    }
}

/// The highlighted byte ranges of `text`, those within one word (`rm-rf`, `a.b`) as one.
fn merge_highlights(text: &str, ranges: &[std::ops::Range<usize>]) -> Vec<(usize, usize)> {
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for range in ranges {
        if let Some(last) = merged.last_mut() {
            let gap = text.get(last.1..range.start).unwrap_or(" ");
            if range.start >= last.1 && !gap.chars().any(char::is_whitespace) {
                last.1 = range.end;
                continue;
            }
        }
        merged.push((range.start, range.end));
    }
    merged
}

/// The latest moment the index can hold: tantivy counts nanoseconds in an i64 (year 2262).
const LATEST_MILLIS: u64 = 9_000_000_000_000;

/// `millis` since the epoch as an index date, later ones held at [`LATEST_MILLIS`].
fn date(millis: u64) -> DateTime {
    DateTime::from_timestamp_millis(i64::try_from(millis.min(LATEST_MILLIS)).unwrap_or(0))
}

/// The query's top-level tokens: split at spaces outside double quotes, quotes kept.
fn tokens(query: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in query.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlights_within_a_word_are_one() {
        let text = "ran rm -rf /srv and printed-marker-51";
        let ranges = [0..3, 4..6, 8..10, 20..27, 28..34, 35..37];
        assert_eq!(
            merge_highlights(text, &ranges),
            [(0, 3), (4, 6), (8, 10), (20, 37)]
        );
    }

    #[test]
    fn tokens_keep_phrases_whole() {
        assert_eq!(
            tokens(r#"user:alice  text:"rm -rf /"  after:7d"#),
            ["user:alice", r#"text:"rm -rf /""#, "after:7d"]
        );
    }
}
