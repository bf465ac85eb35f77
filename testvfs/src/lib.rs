//! A test-only SQLite VFS that simulates power loss: it wraps the default VFS (the store's files
//! are real files), records every write and truncate made to a file since that file's last
//! sync, and at a simulated power cut:
//!
//! 1. from the cut on, every write, truncate, sync and delete fails with an I/O error (the
//!    machine is gone: nothing more reaches the disk), so the store in the test process stops;
//! 2. once the store is closed, [`PowerCutVfs::apply_cut`] rewinds each file to what its last
//!    sync made durable ([`LossMode::AllUnsynced`]), or to that plus a random subset of the
//!    unsynced writes applied in order ([`LossMode::RandomUnsynced`], the way ALICE and
//!    CrashMonkey model a disk that reorders and drops unsynced writes), and deletes the `-shm`
//!    files (shared memory does not survive a power cut).
//!
//! Model limits: a write is kept or lost whole (no torn sectors: SQLite's default VFS claims
//! power-safe overwrite); creating and deleting files are durable at once (directory syncs are
//! not modelled); the memory map is off (the VFS has no `xFetch`), so every page goes through
//! `xWrite`.
//!
//! All `unsafe` here is the SQLite VFS interface: C callbacks receiving pointers from SQLite.
//! Each is delegated to the wrapped file or VFS after the recording.
#![deny(unsafe_op_in_unsafe_fn)]

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::ffi;

/// What survives a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossMode {
    /// Every write since a file's last sync is lost.
    AllUnsynced,
    /// A random subset (each write with probability 1/2, from `seed`) of the writes since a
    /// file's last sync reaches the disk, in their order; the rest is lost.
    RandomUnsynced {
        /// Seed of the subset.
        seed: u64,
    },
}

/// One change to a file not yet synced.
#[derive(Clone, Debug)]
enum Change {
    Write {
        offset: u64,
        old: Vec<u8>,
        old_size: u64,
        new: Vec<u8>,
    },
    Truncate {
        old_size: u64,
        old_tail: Vec<u8>,
        new_size: u64,
    },
}

#[derive(Default)]
struct State {
    /// File operations (writes, truncates, syncs) left before the cut; `None`: not armed.
    countdown: Option<u64>,
    cut: bool,
    /// Path → its changes since its last sync, oldest first.
    unsynced: HashMap<String, Vec<Change>>,
    /// Counters for reports.
    writes: u64,
    syncs: u64,
    /// Files opened through this VFS and not yet closed.
    open_files: u64,
}

/// The shared state of one registered power-cut VFS.
pub struct PowerCutVfs {
    name: String,
    state: Mutex<State>,
}

/// Our `sqlite3_file`: SQLite's base struct first (its `pMethods`), then the wrapped file.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    vfs: *const PowerCutVfs,
    /// NULL for files without a name (temporary files): not recorded.
    path: *mut c_char,
}

/// The wrapped VFS of ours.
///
/// # Safety
/// `vfs` is a VFS registered by [`PowerCutVfs::register`].
unsafe fn real_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: pAppData of our VFS is the wrapped VFS, set at registration.
    unsafe { (*vfs).pAppData.cast() }
}

impl PowerCutVfs {
    /// Registers a new VFS named `name` wrapping SQLite's default VFS (not made the default).
    /// Leaked on purpose: SQLite keeps the pointer for the life of the process.
    pub fn register(name: &str) -> Arc<PowerCutVfs> {
        let shared = Arc::new(PowerCutVfs {
            name: name.to_owned(),
            state: Mutex::new(State::default()),
        });
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS (or NULL before init, which
        // sqlite3_initialize rules out).
        let real = unsafe {
            ffi::sqlite3_initialize();
            ffi::sqlite3_vfs_find(ptr::null())
        };
        assert!(!real.is_null(), "no default SQLite VFS");
        // SAFETY: `real` is a registered VFS, valid for the process.
        let real_ref = unsafe { &*real };
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: std::mem::size_of::<File>() as c_int,
            mxPathname: real_ref.mxPathname,
            pNext: ptr::null_mut(),
            zName: CString::new(name).unwrap().into_raw(),
            pAppData: real.cast(),
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: Some(x_access),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: None,
            xDlError: None,
            xDlSym: None,
            xDlClose: None,
            xRandomness: Some(x_randomness),
            xSleep: Some(x_sleep),
            xCurrentTime: Some(x_current_time),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: Some(x_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        });
        let vfs = Box::into_raw(vfs);
        // The state is reached from files through this leaked Arc clone.
        let leaked = Arc::into_raw(shared.clone());
        VFS_STATE.lock().insert(vfs as usize, leaked as usize);
        // SAFETY: a fully initialised sqlite3_vfs that lives forever (leaked).
        let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
        assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_vfs_register");
        shared
    }

    /// The VFS name, for `Options::vfs`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Arms a cut after `operations` more file writes, truncates and syncs; clears the record
    /// of a previous run.
    pub fn arm(&self, operations: u64) {
        let mut state = self.state.lock();
        *state = State {
            countdown: Some(operations),
            open_files: state.open_files,
            ..State::default()
        };
    }

    /// How many files opened through this VFS are still open.
    pub fn open_files(&self) -> u64 {
        self.state.lock().open_files
    }

    /// Whether the cut happened.
    pub fn is_cut(&self) -> bool {
        self.state.lock().cut
    }

    /// Cuts the power now (if the countdown did not).
    pub fn cut_now(&self) {
        self.state.lock().cut = true;
    }

    /// (writes, syncs) seen since `arm`.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.writes, state.syncs)
    }

    /// After the store is closed: rewinds every file to its durable contents (see
    /// [`LossMode`]), removes the `-shm` files of `shm_of` (the database paths), and disarms.
    /// Returns how many unsynced changes were lost.
    ///
    /// Refuses (an `InvalidInput` error, nothing rewound) while a file opened through this VFS
    /// is still open: SQLite shares one in-memory copy of a database's `-shm` among all the
    /// connections of a process, so a connection that outlived the cut would hand the reopened
    /// store a WAL index describing writes the cut has just thrown away.
    pub fn apply_cut(&self, mode: LossMode, shm_of: &[&std::path::Path]) -> std::io::Result<u64> {
        let mut state = self.state.lock();
        if state.open_files > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} file(s) opened through VFS {:?} are still open: close every connection \
                     (drop every Store clone, runner and subscription) before the cut",
                    state.open_files, self.name
                ),
            ));
        }
        state.cut = true;
        let unsynced = std::mem::take(&mut state.unsynced);
        let mut rng = match mode {
            LossMode::AllUnsynced => None,
            LossMode::RandomUnsynced { seed } => Some(seed | 1),
        };
        let mut lost = 0;
        for (path, changes) in unsynced {
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue; // deleted since: nothing of it survives anyway
            };
            for change in changes.iter().rev() {
                match change {
                    Change::Write {
                        offset,
                        old,
                        old_size,
                        ..
                    } => {
                        file.write_all_at(old, *offset)?;
                        if file.metadata()?.len() > *old_size {
                            file.set_len(*old_size)?;
                        }
                    }
                    Change::Truncate {
                        old_size,
                        old_tail,
                        new_size,
                    } => {
                        file.set_len(*old_size)?;
                        file.write_all_at(old_tail, *new_size)?;
                    }
                }
            }
            for change in &changes {
                let keep = match &mut rng {
                    None => false,
                    Some(x) => {
                        *x ^= *x << 13;
                        *x ^= *x >> 7;
                        *x ^= *x << 17;
                        *x & 1 == 1
                    }
                };
                if !keep {
                    lost += 1;
                    continue;
                }
                match change {
                    Change::Write { offset, new, .. } => file.write_all_at(new, *offset)?,
                    Change::Truncate { new_size, .. } => file.set_len(*new_size)?,
                }
            }
            file.sync_all()?;
        }
        for db in shm_of {
            let mut shm = db.as_os_str().to_owned();
            shm.push("-shm");
            let _ = std::fs::remove_file(shm);
        }
        state.countdown = None;
        state.cut = false;
        Ok(lost)
    }

    /// Counts one operation; true if the power is (now) cut.
    fn tick(state: &mut State) -> bool {
        if state.cut {
            return true;
        }
        if let Some(left) = &mut state.countdown {
            if *left == 0 {
                state.cut = true;
                return true;
            }
            *left -= 1;
        }
        false
    }
}

/// Our VFS pointer → its `PowerCutVfs` (an `Arc::into_raw`).
static VFS_STATE: Mutex<std::collections::BTreeMap<usize, usize>> =
    parking_lot::const_mutex(std::collections::BTreeMap::new());

fn shared_of(vfs: *mut ffi::sqlite3_vfs) -> *const PowerCutVfs {
    VFS_STATE
        .lock()
        .get(&(vfs as usize))
        .map_or(ptr::null(), |&p| p as *const PowerCutVfs)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

/// The wrapped file's methods.
///
/// # Safety
/// `file` is one of our open files.
unsafe fn real(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    // SAFETY: our files are `File`s (szOsFile) whose `real` was opened by the wrapped VFS.
    unsafe {
        let real = (*file.cast::<File>()).real;
        (real, &*(*real).pMethods)
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives us szOsFile bytes at `file`; the wrapped file gets its own
    // allocation of the wrapped VFS's size. Our pMethods stays NULL unless the open succeeds,
    // as the VFS contract requires.
    unsafe {
        let real_vfs = real_vfs(vfs);
        let ours = file.cast::<File>();
        (*ours).base.pMethods = ptr::null();
        let size = (*real_vfs).szOsFile as u64;
        let real = ffi::sqlite3_malloc64(size).cast::<ffi::sqlite3_file>();
        if real.is_null() {
            return ffi::SQLITE_NOMEM;
        }
        ptr::write_bytes(real.cast::<u8>(), 0, size as usize);
        let rc = ((*real_vfs).xOpen.unwrap())(real_vfs, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            ffi::sqlite3_free(real.cast());
            return rc;
        }
        (*ours).real = real;
        (*ours).vfs = shared_of(vfs);
        (*ours).path = if name.is_null() {
            ptr::null_mut()
        } else {
            CString::from(CStr::from_ptr(name)).into_raw()
        };
        (*ours).base.pMethods = &METHODS;
        if !(*ours).vfs.is_null() {
            (*(*ours).vfs).state.lock().open_files += 1;
        }
    }
    ffi::SQLITE_OK
}

/// The shared state and path of a recorded file (None for an unnamed one).
///
/// # Safety
/// `file` is one of our open files.
unsafe fn recorded(file: *mut ffi::sqlite3_file) -> Option<(&'static PowerCutVfs, String)> {
    // SAFETY: set in x_open; the PowerCutVfs is leaked (lives forever); path is our CString.
    unsafe {
        let ours = &*file.cast::<File>();
        if ours.path.is_null() || ours.vfs.is_null() {
            return None;
        }
        Some((
            &*ours.vfs,
            CStr::from_ptr(ours.path).to_string_lossy().into_owned(),
        ))
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: one of our files, closed once by SQLite; we free what x_open allocated.
    unsafe {
        let (real, methods) = real(file);
        let rc = (methods.xClose.unwrap())(real);
        ffi::sqlite3_free(real.cast());
        let ours = file.cast::<File>();
        if !(*ours).vfs.is_null() {
            let mut state = (*(*ours).vfs).state.lock();
            state.open_files = state.open_files.saturating_sub(1);
        }
        if !(*ours).path.is_null() {
            drop(CString::from_raw((*ours).path));
            (*ours).path = ptr::null_mut();
        }
        rc
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: delegated with SQLite's own arguments.
    unsafe {
        let (real, methods) = real(file);
        (methods.xRead.unwrap())(real, buf, amount, offset)
    }
}

fn file_size(real: *mut ffi::sqlite3_file, methods: &ffi::sqlite3_io_methods) -> i64 {
    let mut size = 0i64;
    // SAFETY: an open wrapped file.
    unsafe { (methods.xFileSize.unwrap())(real, &mut size) };
    size
}

/// Reads `len` bytes at `offset` of the wrapped file as they are now (short past the end).
fn read_now(
    real: *mut ffi::sqlite3_file,
    methods: &ffi::sqlite3_io_methods,
    offset: i64,
    len: usize,
    size: i64,
) -> Vec<u8> {
    let available = (size - offset).clamp(0, len as i64) as usize;
    let mut old = vec![0u8; available];
    if available > 0 {
        // SAFETY: `old` has `available` bytes, all within the file.
        unsafe {
            (methods.xRead.unwrap())(real, old.as_mut_ptr().cast(), available as c_int, offset)
        };
    }
    old
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: one of our files; `buf` holds `amount` bytes (SQLite's contract).
    unsafe {
        let (real, methods) = real(file);
        let Some((shared, path)) = recorded(file) else {
            return (methods.xWrite.unwrap())(real, buf, amount, offset);
        };
        // The lock spans record + write, so the cut falls between two whole operations.
        let mut state = shared.state.lock();
        if PowerCutVfs::tick(&mut state) {
            return ffi::SQLITE_IOERR_WRITE;
        }
        state.writes += 1;
        let size = file_size(real, methods);
        let old = read_now(real, methods, offset, amount as usize, size);
        let new = std::slice::from_raw_parts(buf.cast::<u8>(), amount as usize).to_vec();
        let rc = (methods.xWrite.unwrap())(real, buf, amount, offset);
        if rc == ffi::SQLITE_OK {
            state.unsynced.entry(path).or_default().push(Change::Write {
                offset: offset as u64,
                old,
                old_size: size as u64,
                new,
            });
        }
        rc
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, new_size: i64) -> c_int {
    // SAFETY: as x_write.
    unsafe {
        let (real, methods) = real(file);
        let Some((shared, path)) = recorded(file) else {
            return (methods.xTruncate.unwrap())(real, new_size);
        };
        let mut state = shared.state.lock();
        if PowerCutVfs::tick(&mut state) {
            return ffi::SQLITE_IOERR_TRUNCATE;
        }
        let size = file_size(real, methods);
        let old_tail = read_now(
            real,
            methods,
            new_size,
            (size - new_size).max(0) as usize,
            size,
        );
        let rc = (methods.xTruncate.unwrap())(real, new_size);
        if rc == ffi::SQLITE_OK && size > new_size {
            state
                .unsynced
                .entry(path)
                .or_default()
                .push(Change::Truncate {
                    old_size: size as u64,
                    old_tail,
                    new_size: new_size as u64,
                });
        }
        rc
    }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as x_write.
    unsafe {
        let (real, methods) = real(file);
        let Some((shared, path)) = recorded(file) else {
            return (methods.xSync.unwrap())(real, flags);
        };
        let mut state = shared.state.lock();
        if PowerCutVfs::tick(&mut state) {
            return ffi::SQLITE_IOERR_FSYNC;
        }
        state.syncs += 1;
        let rc = (methods.xSync.unwrap())(real, flags);
        if rc == ffi::SQLITE_OK {
            // Everything written to this file (through any handle) is durable now.
            state.unsynced.remove(&path);
        }
        rc
    }
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xFileSize.unwrap())(real, size)
    }
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xLock.unwrap())(real, level)
    }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xUnlock.unwrap())(real, level)
    }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xCheckReservedLock.unwrap())(real, out)
    }
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xFileControl.unwrap())(real, op, arg)
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xSectorSize.unwrap())(real)
    }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xDeviceCharacteristics.unwrap())(real)
    }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: delegated (the wrapped file's methods are version 2 or more: it runs WAL).
    unsafe {
        let (real, methods) = real(file);
        (methods.xShmMap.unwrap())(real, region, size, extend, out)
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xShmLock.unwrap())(real, offset, n, flags)
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xShmBarrier.unwrap())(real)
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let (real, methods) = real(file);
        (methods.xShmUnmap.unwrap())(real, delete)
    }
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    let shared = shared_of(vfs);
    // SAFETY: `name` is a NUL-terminated path (SQLite's contract); the state is leaked.
    unsafe {
        if !shared.is_null() {
            let mut state = (*shared).state.lock();
            if state.cut {
                return ffi::SQLITE_IOERR_DELETE;
            }
            state
                .unsynced
                .remove(CStr::from_ptr(name).to_string_lossy().as_ref());
        }
        let real = real_vfs(vfs);
        ((*real).xDelete.unwrap())(real, name, sync_dir)
    }
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let real = real_vfs(vfs);
        ((*real).xAccess.unwrap())(real, name, flags, out)
    }
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let real = real_vfs(vfs);
        ((*real).xFullPathname.unwrap())(real, name, n, out)
    }
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let real = real_vfs(vfs);
        ((*real).xRandomness.unwrap())(real, n, out)
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let real = real_vfs(vfs);
        ((*real).xSleep.unwrap())(real, micros)
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let real = real_vfs(vfs);
        ((*real).xCurrentTime.unwrap())(real, out)
    }
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    // SAFETY: delegated (the default unix VFS is version 3).
    unsafe {
        let real = real_vfs(vfs);
        ((*real).xCurrentTimeInt64.unwrap())(real, out)
    }
}

unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: delegated.
    unsafe {
        let real = real_vfs(vfs);
        ((*real).xGetLastError.unwrap())(real, n, out)
    }
}
