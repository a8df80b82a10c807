//! TensorBoard event files: training scalars that `tensorboard --logdir` shows while a run
//! trains, written without TensorFlow or a protobuf compiler.
//!
//! An events file is a sequence of TFRecords, each holding one serialized `Event` proto:
//!
//! ```text
//! u64 length (little-endian) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
//! masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8   (wrapping; CRC32C, Castagnoli)
//! ```
//!
//! The few protobuf fields used are encoded by hand (tensorflow/core/util/event.proto and
//! tensorflow/core/framework/summary.proto):
//!
//! ```text
//! Event         { 1: double wall_time, 2: int64 step, 3: string file_version,
//!                 5: Summary summary, 7: SessionLog session_log }
//! Summary       { 1: repeated Value value }
//! Summary.Value { 1: string tag, 2: float simple_value }
//! SessionLog    { 1: enum status (START = 1) }
//! ```
//!
//! The first event of a file carries `file_version = "brain.Event:2"`, the second a
//! `SessionLog` START at the first step this process trains. Files are named
//! `events.out.tfevents.<unix seconds>.<hostname>.<pid>.<counter>`, the convention of
//! TensorFlow and PyTorch writers (TensorBoard reads any file with `tfevents` in its name).
//! `scripts/read-tfevents.py` reads the same format independently of this code.
//!
//! The files are derived from each run's `epochs.csv`: [`repair`] rebuilds them when epochs
//! are missing or repeated.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

mod repair;

pub use repair::{repair, repair_folders, row_scalars, written_unix_s};

/// `Event.file_version` of the first event of every file.
const FILE_VERSION: &str = "brain.Event:2";
/// Every events file's name starts with this.
const FILE_PREFIX: &str = "events.out.tfevents.";
/// Temporary files of a rewrite; without `tfevents` in the name, so that TensorBoard never
/// reads a half-written (or left-over) one.
const REWRITE_PREFIX: &str = ".tensorboard-rewrite-";
/// The TFRecord header: the length and its masked CRC.
const HEADER_LEN: usize = 12;
/// The TFRecord footer: the data's masked CRC.
const FOOTER_LEN: usize = 4;

/// An events file that this process appends scalars to.
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    file: File,
    pruned: Pruned,
}

/// What [`EventFile::create`] did to the events files already in its folder.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Files rewritten without their events after the resume step (or without a torn tail).
    pub files_rewritten: usize,
    /// Files deleted because no scalar event was left in them.
    pub files_deleted: usize,
    /// Events dropped because their step came after the resume step.
    pub events_dropped: usize,
    /// Bytes of torn (truncated or corrupt) trailing records dropped.
    pub torn_bytes: u64,
}

/// One decoded `Event`, as far as this module understands it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// The training step (iteration) it belongs to.
    pub step: i64,
    /// `Some("brain.Event:2")` on the first event of a file.
    pub file_version: Option<String>,
    /// Whether it is a `SessionLog` START: a (re)start of training at `step`.
    pub session_start: bool,
    /// The summary's `(tag, simple_value)` pairs; values of other kinds are skipped.
    pub scalars: Vec<(String, f32)>,
}

/// The intact records of one events file, and how many bytes after them were torn.
#[derive(Debug)]
pub struct EventLog {
    /// Every record before the first one that is truncated or fails a CRC.
    pub records: Vec<Record>,
    /// Bytes from the first bad record to the end of the file (0 for a clean file).
    pub torn_bytes: u64,
}

/// One TFRecord: its payload as stored, and the `Event` decoded from it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The serialized `Event`, kept byte for byte so that a rewrite preserves fields this
    /// module does not decode.
    pub data: Vec<u8>,
    /// The decoded event.
    pub event: Event,
}

impl EventFile {
    /// Creates a new events file in `dir` (created if missing) and writes its file-version
    /// event, after pruning the folder's existing events files for a resumed run.
    ///
    /// `resume_from_step` is the step of the checkpoint the run resumes from, or any negative
    /// number for a run that starts from scratch. The run re-trains every step after it, so
    /// every existing events file holding events with a later step is rewritten without them
    /// (atomically: a temporary file in `dir`, then a rename), and deleted if no scalar event
    /// is left. A torn tail (a crash while appending) is dropped the same way; the intact
    /// records before it are kept.
    ///
    /// The new file starts with its file-version event and a `SessionLog` START at step
    /// `resume_from_step + 1` (0 from scratch), so that a TensorBoard already reading the
    /// folder drops what it had read from that step on instead of showing those steps twice
    /// (TensorBoard's Python loader purges version-2 files on nothing else).
    ///
    /// Only one process may write a folder at a time (the run's lock ensures it for run
    /// folders).
    pub fn create(dir: &Path, resume_from_step: i64) -> Result<EventFile> {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating the TensorBoard folder {}", dir.display()))?;
        let pruned = prune_after_step(dir, resume_from_step)?;
        let wall_time = unix_now_s();
        let (path, file) = create_unique_file(dir, wall_time as u64)?;
        let mut events = EventFile { path, file, pruned };
        let data = encode_event(wall_time, 0, Payload::FileVersion(FILE_VERSION));
        events.write_record(&data)?;
        let first_step = resume_from_step.saturating_add(1).max(0);
        events.write_record(&encode_event(wall_time, first_step, Payload::SessionStart))?;
        Ok(events)
    }

    /// Appends one `Event` at `step` whose summary holds every `(tag, value)` of `scalars`
    /// (stored as `f32`, TensorBoard's `simple_value`), and flushes it, so that a running
    /// `tensorboard --logdir` sees it at once.
    pub fn append(
        &mut self,
        step: i64,
        wall_time_unix_s: f64,
        scalars: &[(&str, f64)],
    ) -> Result<()> {
        let data = encode_event(wall_time_unix_s, step, Payload::Scalars(scalars));
        self.write_record(&data)
    }

    /// The file this process writes.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What creating this file did to the older files of its folder.
    pub fn pruned(&self) -> &Pruned {
        &self.pruned
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        // One write per record, so that a crash leaves at most one torn record at the end.
        self.file
            .write_all(&frame(data))
            .and_then(|()| self.file.flush())
            .with_context(|| format!("appending to the events file {}", self.path.display()))
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Rewrites or deletes the events files in `dir` that hold events after `step` or a torn
/// tail, and deletes the temporary files of a rewrite that a crash left behind; see
/// [`EventFile::create`].
fn prune_after_step(dir: &Path, step: i64) -> Result<Pruned> {
    for path in files_starting_with(dir, REWRITE_PREFIX)? {
        fs::remove_file(&path)
            .with_context(|| format!("deleting the left-over file {}", path.display()))?;
    }
    let mut pruned = Pruned::default();
    for path in files_starting_with(dir, FILE_PREFIX)? {
        let log = read_events(&path)?;
        let total = log.records.len();
        let kept: Vec<&Record> = log
            .records
            .iter()
            .filter(|r| r.event.step <= step)
            .collect();
        if kept.len() == total && log.torn_bytes == 0 {
            continue;
        }
        pruned.events_dropped += total - kept.len();
        pruned.torn_bytes += log.torn_bytes;
        if kept.iter().all(|r| r.event.scalars.is_empty()) {
            fs::remove_file(&path)
                .with_context(|| format!("deleting the events file {}", path.display()))?;
            pruned.files_deleted += 1;
        } else {
            rewrite(&path, &kept)?;
            pruned.files_rewritten += 1;
        }
    }
    Ok(pruned)
}

/// The files directly in `dir` whose names start with `prefix`, sorted by name.
fn files_starting_with(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let context = || format!("listing the TensorBoard folder {}", dir.display());
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).with_context(context)? {
        let entry = entry.with_context(context)?;
        let matches = entry.file_name().to_string_lossy().starts_with(prefix);
        if matches && entry.file_type().with_context(context)?.is_file() {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths)
}

/// Reads the records of an events file, checking both CRCs of each. Reading stops at the
/// first record that is truncated or fails a CRC: everything from there on is counted as
/// the torn tail. A record whose CRCs hold but which does not decode as an `Event` is an
/// error.
pub fn read_events(path: &Path) -> Result<EventLog> {
    let bytes =
        fs::read(path).with_context(|| format!("reading the events file {}", path.display()))?;
    let mut records = Vec::new();
    let mut pos = 0;
    while let Some((data, len)) = next_record(&bytes[pos..]) {
        let event = decode_event(data).with_context(|| {
            format!(
                "decoding the event at byte {pos} of the events file {}",
                path.display()
            )
        })?;
        records.push(Record {
            data: data.to_vec(),
            event,
        });
        pos += len;
    }
    let torn_bytes = (bytes.len() - pos) as u64;
    Ok(EventLog {
        records,
        torn_bytes,
    })
}

/// The payload of the record at the start of `bytes` and the record's whole length, or
/// `None` when it is truncated or fails a CRC (or `bytes` is empty).
fn next_record(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let header = bytes.get(..HEADER_LEN)?;
    let (len_bytes, len_crc) = header.split_at(8);
    if u32::from_le_bytes(len_crc.try_into().ok()?) != masked_crc32c(len_bytes) {
        return None;
    }
    let data_len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().ok()?)).ok()?;
    let data_end = HEADER_LEN.checked_add(data_len)?;
    let data = bytes.get(HEADER_LEN..data_end)?;
    let data_crc = bytes.get(data_end..data_end.checked_add(FOOTER_LEN)?)?;
    if u32::from_le_bytes(data_crc.try_into().ok()?) != masked_crc32c(data) {
        return None;
    }
    Some((data, data_end + FOOTER_LEN))
}

/// Replaces `path` by a file holding only `records`, atomically.
fn rewrite(path: &Path, records: &[&Record]) -> Result<()> {
    let context = || format!("rewriting the events file {}", path.display());
    let dir = path.parent().with_context(context)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(REWRITE_PREFIX)
        .tempfile_in(dir)
        .with_context(context)?;
    for record in records {
        tmp.write_all(&frame(&record.data)).with_context(context)?;
    }
    let permissions = fs::metadata(path).with_context(context)?.permissions();
    tmp.as_file()
        .set_permissions(permissions)
        .with_context(context)?;
    tmp.as_file().sync_all().with_context(context)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(context)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(context)
}

/// Creates `events.out.tfevents.<secs>.<host>.<pid>.<n>` in `dir`, never over an existing
/// file; `n` counts the files this process created, so names differ within one second.
fn create_unique_file(dir: &Path, unix_secs: u64) -> Result<(PathBuf, File)> {
    static FILES_CREATED: AtomicU32 = AtomicU32::new(0);
    let host = hostname();
    let pid = std::process::id();
    loop {
        let n = FILES_CREATED.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{FILE_PREFIX}{unix_secs}.{host}.{pid}.{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating the events file {}", path.display()))
            }
        }
    }
}

/// This machine's name, reduced to characters that are safe in a file name.
fn hostname() -> String {
    let name: String = spec::layout::hostname()
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

// ---- TFRecord framing and CRC32C ----

/// `data` framed as one TFRecord.
fn frame(data: &[u8]) -> Vec<u8> {
    let len_bytes = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + data.len() + FOOTER_LEN);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&masked_crc32c(&len_bytes).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// CRC32C lookup table: the reflected Castagnoli polynomial 0x82F63B78, one byte at a time.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC32C (Castagnoli) of `bytes`.
fn crc32c(bytes: &[u8]) -> u32 {
    let crc = bytes.iter().fold(!0u32, |crc, &b| {
        CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    });
    !crc
}

/// The CRC that TFRecord stores: CRC32C rotated right by 15 bits plus a constant.
fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

// ---- Protobuf encoding ----

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;
/// `SessionLog.SessionStatus.START`.
const SESSION_START: u64 = 1;

/// What an event carries besides its time and step.
enum Payload<'a> {
    /// `Event.file_version`: the first event of a file.
    FileVersion(&'a str),
    /// `Event.session_log` with status START.
    SessionStart,
    /// `Event.summary` with one `simple_value` per scalar.
    Scalars(&'a [(&'a str, f64)]),
}

/// A serialized `Event`.
fn encode_event(wall_time: f64, step: i64, payload: Payload) -> Vec<u8> {
    let mut event = Vec::new();
    put_key(&mut event, 1, FIXED64);
    event.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        // Left out at its default, as protobuf serializers do; negative steps take ten bytes.
        put_key(&mut event, 2, VARINT);
        put_varint(&mut event, step as u64);
    }
    match payload {
        Payload::FileVersion(version) => put_len_field(&mut event, 3, version.as_bytes()),
        Payload::SessionStart => {
            let mut session_log = Vec::new();
            put_key(&mut session_log, 1, VARINT);
            put_varint(&mut session_log, SESSION_START);
            put_len_field(&mut event, 7, &session_log);
        }
        Payload::Scalars(scalars) => {
            let mut summary = Vec::new();
            for &(tag, value) in scalars {
                let mut entry = Vec::new();
                put_len_field(&mut entry, 1, tag.as_bytes());
                put_key(&mut entry, 2, FIXED32);
                entry.extend_from_slice(&(value as f32).to_le_bytes());
                put_len_field(&mut summary, 1, &entry);
            }
            put_len_field(&mut event, 5, &summary);
        }
    }
    event
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(buf, u64::from(field) << 3 | u64::from(wire_type));
}

fn put_len_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

// ---- Protobuf decoding ----

/// One field's value, by wire type.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Len(&'a [u8]),
    Fixed32([u8; 4]),
}

/// Walks the fields of one serialized message.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    /// The next `(field number, value)`, `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Field<'a>)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match (key & 7) as u8 {
            VARINT => Field::Varint(self.varint()?),
            FIXED64 => Field::Fixed64(self.take(8)?.try_into()?),
            LEN => {
                let len = usize::try_from(self.varint()?)?;
                Field::Len(self.take(len)?)
            }
            FIXED32 => Field::Fixed32(self.take(4)?.try_into()?),
            other => bail!(
                "unsupported protobuf wire type {other} at byte {}",
                self.pos
            ),
        };
        Ok(Some((key >> 3, value)))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first().context("empty read")?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("protobuf varint longer than ten bytes at byte {}", self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            bail!(
                "protobuf message truncated at byte {} (needs {n} more)",
                self.pos
            )
        };
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }
}

/// Decodes an `Event`; fields other than those in the module docs are skipped.
fn decode_event(data: &[u8]) -> Result<Event> {
    let mut event = Event {
        wall_time: 0.0,
        step: 0,
        file_version: None,
        session_start: false,
        scalars: Vec::new(),
    };
    let mut fields = Fields::new(data);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (1, Field::Fixed64(b)) => event.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => event.step = v as i64,
            (3, Field::Len(b)) => {
                event.file_version = Some(String::from_utf8(b.to_vec()).context("file_version")?)
            }
            (5, Field::Len(b)) => decode_summary(b, &mut event.scalars).context("summary")?,
            (7, Field::Len(b)) => event.session_start = is_session_start(b)?,
            _ => {}
        }
    }
    Ok(event)
}

/// Whether a `SessionLog` has status START.
fn is_session_start(data: &[u8]) -> Result<bool> {
    let mut fields = Fields::new(data);
    let mut start = false;
    while let Some((number, value)) = fields.next_field().context("session_log")? {
        if let (1, Field::Varint(status)) = (number, value) {
            start = status == SESSION_START;
        }
    }
    Ok(start)
}

/// Appends the `(tag, simple_value)` of each `Summary.Value` that has a simple value.
fn decode_summary(data: &[u8], scalars: &mut Vec<(String, f32)>) -> Result<()> {
    let mut fields = Fields::new(data);
    while let Some((number, value)) = fields.next_field()? {
        let (1, Field::Len(entry)) = (number, value) else {
            continue;
        };
        let (mut tag, mut simple_value) = (String::new(), None);
        let mut entry = Fields::new(entry);
        while let Some((number, value)) = entry.next_field()? {
            match (number, value) {
                (1, Field::Len(b)) => tag = String::from_utf8(b.to_vec()).context("tag")?,
                (2, Field::Fixed32(b)) => simple_value = Some(f32::from_le_bytes(b)),
                _ => {}
            }
        }
        if let Some(value) = simple_value {
            scalars.push((tag, value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Events at steps 1..=n with two scalars each: `train/loss` = 1/step, `test/error` = step.
    fn write_steps(dir: &Path, steps: std::ops::RangeInclusive<i64>) -> PathBuf {
        let mut events = EventFile::create(dir, *steps.start() - 1).unwrap();
        for step in steps {
            let scalars = [
                ("train/loss", 1.0 / step as f64),
                ("test/error", step as f64),
            ];
            events.append(step, 1.7e9 + step as f64, &scalars).unwrap();
        }
        events.path().to_path_buf()
    }

    /// Every `(step, tag)` of every events file in `dir`, sorted.
    fn steps_and_tags(dir: &Path) -> Vec<(i64, String)> {
        let mut found = Vec::new();
        for path in files_starting_with(dir, FILE_PREFIX).unwrap() {
            let log = read_events(&path).unwrap();
            assert_eq!(log.torn_bytes, 0, "{}", path.display());
            for record in log.records {
                for (tag, _) in record.event.scalars {
                    found.push((record.event.step, tag));
                }
            }
        }
        found.sort();
        found
    }

    fn expected(steps: std::ops::RangeInclusive<i64>) -> Vec<(i64, String)> {
        let mut all: Vec<_> = steps
            .flat_map(|s| [(s, "test/error".to_string()), (s, "train/loss".to_string())])
            .collect();
        all.sort();
        all
    }

    #[test]
    fn crc32c_matches_known_vectors() {
        // RFC 3720 (iSCSI), appendix B.4, and the usual check value of CRC-32C.
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        // masked = rotr(0xE3069283, 15) + 0xa282ead8 = 0x2507_C60D + 0xA282_EAD8
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn events_encode_as_the_protobuf_library_does() {
        // From tensorboard 2.21's own protos (protobuf 7.36):
        //   from tensorboard.compat.proto import event_pb2, summary_pb2
        //   E, S = event_pb2.Event, event_pb2.SessionLog
        //   E(wall_time=1.5e9, file_version="brain.Event:2").SerializeToString().hex()
        //   E(wall_time=1.5e9, step=7, session_log=S(status=S.START)).SerializeToString().hex()
        //   E(wall_time=1.5e9, step=-2, summary=summary_pb2.Summary(value=[
        //       summary_pb2.Summary.Value(tag="train/loss", simple_value=0.5)])).SerializeToString().hex()
        let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let file_version = encode_event(1.5e9, 0, Payload::FileVersion(FILE_VERSION));
        assert_eq!(
            hex(file_version),
            "09000000c00b5ad6411a0d627261696e2e4576656e743a32"
        );
        let session_start = encode_event(1.5e9, 7, Payload::SessionStart);
        assert_eq!(hex(session_start), "09000000c00b5ad64110073a020801");
        let scalar = encode_event(1.5e9, -2, Payload::Scalars(&[("train/loss", 0.5)]));
        assert_eq!(
            hex(scalar),
            "09000000c00b5ad64110feffffffffffffffff012a130a110a0a747261696e2f6c6f7373150000003f"
        );
    }

    #[test]
    fn appended_events_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = EventFile::create(dir.path(), -1).unwrap();
        events
            .append(1, 1.5e9, &[("a", 0.1), ("b/c", -3.25)])
            .unwrap();
        events
            .append(1 << 40, 1.5e9 + 0.25, &[("a", 1e-7)])
            .unwrap();
        events.append(-2, 1.5e9 + 0.5, &[]).unwrap();
        assert!(events
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events.out.tfevents."));

        let log = read_events(events.path()).unwrap();
        assert_eq!(log.torn_bytes, 0);
        let read: Vec<_> = log.records.into_iter().map(|r| r.event).collect();
        assert_eq!(read.len(), 5);
        assert_eq!(read[0].file_version.as_deref(), Some("brain.Event:2"));
        assert!(read[0].scalars.is_empty() && !read[0].session_start);
        assert!(read[1].session_start && read[1].scalars.is_empty());
        assert_eq!(read[1].step, 0, "a run from scratch starts at step 0");
        let read = &read[2..];
        assert_eq!(read[0].step, 1);
        assert_eq!(read[0].wall_time, 1.5e9);
        let expected = [("a".into(), 0.1f32), ("b/c".into(), -3.25)];
        assert_eq!(read[0].scalars, expected);
        assert_eq!(read[1].step, 1 << 40);
        assert_eq!(read[1].wall_time, 1.5e9 + 0.25);
        assert_eq!(read[1].scalars, [("a".into(), 1e-7f32)]);
        assert_eq!(read[2].step, -2);
        assert!(read[2].scalars.is_empty() && read[2].file_version.is_none());
    }

    #[test]
    fn files_created_in_one_second_get_distinct_names() {
        let dir = tempfile::tempdir().unwrap();
        let first = EventFile::create(dir.path(), -1).unwrap();
        let second = EventFile::create(dir.path(), 0).unwrap();
        assert_ne!(first.path(), second.path());
        assert_eq!(
            files_starting_with(dir.path(), FILE_PREFIX).unwrap().len(),
            2
        );
    }

    #[test]
    fn resume_drops_events_after_the_resume_step() {
        let dir = tempfile::tempdir().unwrap();
        let old = write_steps(dir.path(), 1..=10);

        // Resumed from the checkpoint at step 6: steps 7..=10 are trained again.
        let mut events = EventFile::create(dir.path(), 6).unwrap();
        assert_eq!(
            *events.pruned(),
            Pruned {
                files_rewritten: 1,
                files_deleted: 0,
                events_dropped: 4,
                torn_bytes: 0
            }
        );
        let old_log = read_events(&old).unwrap();
        assert_eq!(
            old_log.records[0].event.file_version.as_deref(),
            Some(FILE_VERSION)
        );
        assert_eq!(old_log.records.last().unwrap().event.step, 6);
        let new_log = read_events(events.path()).unwrap();
        let start = &new_log.records[1].event;
        assert!(start.session_start && start.step == 7, "{start:?}");
        for step in 7..=8 {
            events
                .append(step, 1.8e9, &[("train/loss", 0.5), ("test/error", 1.0)])
                .unwrap();
        }
        assert_eq!(steps_and_tags(dir.path()), expected(1..=8));
        let stray = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(stray, 2, "only the two events files, no temporary file");

        // A second resume from an earlier checkpoint prunes both files.
        let again = EventFile::create(dir.path(), 3).unwrap();
        assert_eq!(again.pruned().files_rewritten, 1);
        assert_eq!(
            again.pruned().files_deleted,
            1,
            "the file of steps 7..=8 has no scalar left"
        );
        assert_eq!(steps_and_tags(dir.path()), expected(1..=3));
    }

    #[test]
    fn a_fresh_start_deletes_every_old_scalar() {
        let dir = tempfile::tempdir().unwrap();
        write_steps(dir.path(), 1..=3);
        // A rewrite killed before its rename leaves its temporary file behind.
        fs::write(
            dir.path().join(format!("{REWRITE_PREFIX}x1y2z3")),
            b"partial",
        )
        .unwrap();
        let events = EventFile::create(dir.path(), -1).unwrap();
        assert_eq!(events.pruned().files_deleted, 1);
        let left: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, [events.path().to_path_buf()]);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_intact_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = write_steps(dir.path(), 1..=5);
        // A crash in the middle of appending step 6: the record is cut short.
        let torn = frame(&encode_event(
            1.0,
            6,
            Payload::Scalars(&[("train/loss", 0.1)]),
        ));
        let cut = &torn[..torn.len() - 7];
        OpenOptions::new()
            .append(true)
            .open(&old)
            .unwrap()
            .write_all(cut)
            .unwrap();

        let log = read_events(&old).unwrap();
        assert_eq!(
            log.records.len(),
            7,
            "file version, session start, steps 1..=5"
        );
        assert_eq!(log.torn_bytes, cut.len() as u64);

        // Nothing lies after the resume step, but the torn tail still goes.
        let events = EventFile::create(dir.path(), 5).unwrap();
        assert_eq!(events.pruned().files_rewritten, 1);
        assert_eq!(events.pruned().torn_bytes, cut.len() as u64);
        assert_eq!(steps_and_tags(dir.path()), expected(1..=5));
    }

    #[test]
    fn a_record_failing_its_crc_ends_the_intact_part() {
        let dir = tempfile::tempdir().unwrap();
        let old = write_steps(dir.path(), 1..=4);
        let mut bytes = fs::read(&old).unwrap();
        let last = bytes.len() - FOOTER_LEN - 1;
        bytes[last] ^= 0x40; // one flipped bit in the last record's data
        fs::write(&old, &bytes).unwrap();

        let log = read_events(&old).unwrap();
        assert_eq!(log.records.last().unwrap().event.step, 3);
        let events = EventFile::create(dir.path(), 10).unwrap();
        assert_eq!(events.pruned().events_dropped, 0);
        assert_eq!(steps_and_tags(dir.path()), expected(1..=3));
    }

    /// Reads `dir` with `scripts/read-tfevents.py`, a reader written from the format's
    /// description alone (its own CRC32C and protobuf decoding), and checks every scalar.
    #[test]
    fn an_independent_reader_finds_every_scalar() {
        type Scalars = &'static [(&'static str, f64)];
        let before_resume: [(i64, f64, Scalars); 2] = [
            (
                1,
                1.7e9 + 0.125,
                &[("train/loss", std::f64::consts::LN_10), ("train/lr", 0.1)],
            ),
            (5, 1.7e9 + 1.0, &[("train/loss", 9.0)]), // re-trained after the resume
        ];
        let after_resume: [(i64, f64, Scalars); 2] = [
            (
                390,
                1.7e9 + 60.5,
                &[("train/loss", 0.693), ("test/error", 0.2975)],
            ),
            (
                1 << 33,
                1.7e9 + 3600.0,
                &[("test/error", 1e-7), ("z", -12345.678)],
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut old = EventFile::create(dir.path(), -1).unwrap();
        for (step, wall_time, scalars) in before_resume {
            old.append(step, wall_time, scalars).unwrap();
        }
        let mut new = EventFile::create(dir.path(), 1).unwrap();
        for (step, wall_time, scalars) in after_resume {
            new.append(step, wall_time, scalars).unwrap();
        }
        let expected: Vec<(i64, f64, &str, f64)> = [before_resume[0]]
            .iter()
            .chain(&after_resume)
            .flat_map(|&(step, time, scalars)| {
                scalars.iter().map(move |&(t, v)| (step, time, t, v))
            })
            .collect();

        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/read-tfevents.py"
        );
        let output = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "read-tfevents.py failed: {stderr}");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(json["file_count"], 2);
        for file in json["files"].as_array().unwrap() {
            assert_eq!(file["file_version"], FILE_VERSION);
        }
        let found = json["scalars"].as_array().unwrap();
        assert_eq!(found.len(), expected.len(), "{found:?}");
        for (step, wall_time, tag, value) in expected {
            let scalar = found
                .iter()
                .find(|s| s["step"] == step && s["tag"] == tag)
                .unwrap_or_else(|| panic!("{tag} at step {step} missing: {found:?}"));
            let read_value = scalar["value"].as_f64().unwrap() as f32;
            assert_eq!(read_value, value as f32, "{tag} at step {step}");
            assert_eq!(
                scalar["wall_time"].as_f64(),
                Some(wall_time),
                "{tag} at step {step}"
            );
        }
    }
}
