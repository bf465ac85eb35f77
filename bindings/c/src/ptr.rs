//! Every pointer the C caller hands in is turned into a Rust reference, slice or string here,
//! and handles into boxes and back. Each helper is an `unsafe fn` whose contract is the
//! header's: a non-NULL pointer given with a length points to that many readable elements that
//! stay unchanged for the duration of the call; a non-NULL `const char *` points to a
//! NUL-terminated string; a non-NULL out-pointer points to writable memory of its type.
//! What can be checked without reading invalid memory is checked: NULL, lengths over
//! `isize::MAX`, misalignment, and whether a handle is live.
//!
//! Handles are checked against a registry of the addresses of live handles (with their type),
//! taken before a handle is dereferenced and updated under the same lock when one is freed: a
//! freed, foreign or wrong-type pointer is `STRATA_MISUSE` without its memory being read, and
//! two threads freeing the same handle cannot both free it. (An address the allocator has
//! reused for a new handle of the same type is that new handle: that misuse is not detectable.)

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::raw::{c_char, c_void};

use parking_lot::Mutex;

use crate::status::Fail;

/// A type handed to C as an opaque pointer.
pub(crate) trait Handle {
    /// This type's tag in the registry of live handles.
    const TAG: u64;
    /// The handle's name in messages.
    const NAME: &'static str;
}

/// Address of every live handle → its type's tag.
static LIVE: Mutex<BTreeMap<usize, u64>> = parking_lot::const_mutex(BTreeMap::new());

/// Boxes `value`, registers it as live and returns the pointer handed to C.
pub(crate) fn into_handle<T: Handle>(value: T) -> *mut T {
    let handle = Box::into_raw(Box::new(value));
    LIVE.lock().insert(handle as usize, T::TAG);
    handle
}

/// Whether `handle` is a live handle of type `T`, from the registry alone (no memory read).
fn check_live<T: Handle>(handle: *const T, live: &BTreeMap<usize, u64>) -> Result<(), Fail> {
    if handle.is_null() {
        return Err(Fail::misuse(format!("the {} handle is NULL", T::NAME)));
    }
    match live.get(&(handle as usize)) {
        Some(&tag) if tag == T::TAG => Ok(()),
        Some(_) => Err(Fail::misuse(format!(
            "not a {} handle (a handle of another type)",
            T::NAME
        ))),
        None => Err(Fail::misuse(format!(
            "not a live {} handle (already freed, or not returned by this library)",
            T::NAME
        ))),
    }
}

/// The handle behind `handle`, after checking that it is a live handle of type `T`.
///
/// # Safety
///
/// The handle must not be freed (by another thread) while the returned reference is in use:
/// the C contract that a handle is not freed during a call on it.
pub(crate) unsafe fn handle_ref<'a, T: Handle>(handle: *const T) -> Result<&'a T, Fail> {
    check_live(handle, &LIVE.lock())?;
    // SAFETY: registered by `into_handle` and not yet removed by `free_handle`, so a live
    // `Box<T>`; by the caller's contract it stays live for the duration of the call.
    Ok(unsafe { &*handle })
}

/// Frees a handle made by `into_handle`. NULL is accepted and does nothing; a pointer that is
/// not a live handle of type `T` is `STRATA_MISUSE` and is not touched.
///
/// # Safety
///
/// No other call may be using the handle (the C contract).
pub(crate) unsafe fn free_handle<T: Handle>(handle: *mut T) -> Result<(), Fail> {
    if handle.is_null() {
        return Ok(());
    }
    {
        let mut live = LIVE.lock();
        check_live(handle.cast_const(), &live)?;
        live.remove(&(handle as usize));
    }
    // SAFETY: it was live (a Box<T> from `into_handle`) and is now unregistered under the lock,
    // so no other `free_handle` can reach this line for it, and no later call can pass the check.
    drop(unsafe { Box::from_raw(handle) });
    Ok(())
}

/// A NUL-terminated UTF-8 string argument. NULL or invalid UTF-8 is `STRATA_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `ptr` is NULL or a NUL-terminated string unchanged while the result is used.
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Fail> {
    // SAFETY: the same contract as ours.
    unsafe { opt_str_arg(ptr, what) }?.ok_or_else(|| Fail::invalid(format!("{what} is NULL")))
}

/// A NUL-terminated UTF-8 string argument that may be NULL.
///
/// # Safety
///
/// As `str_arg`.
pub(crate) unsafe fn opt_str_arg<'a>(
    ptr: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Fail> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, and by the contract a NUL-terminated string unchanged during the call.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes
        .to_str()
        .map(Some)
        .map_err(|_| Fail::invalid(format!("{what} is not valid UTF-8")))
}

/// `len` elements at `ptr`. `len == 0` gives an empty slice whatever `ptr` is; NULL with a
/// non-zero length, misalignment, or more than `isize::MAX` bytes is `STRATA_INVALID_ARGUMENT`.
///
/// # Safety
///
/// A non-NULL `ptr` points to `len` readable elements, unchanged while the result is used.
pub(crate) unsafe fn slice_arg<'a, T>(
    ptr: *const T,
    len: usize,
    what: &str,
) -> Result<&'a [T], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Fail::invalid(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    let too_long = len
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize);
    if too_long {
        return Err(Fail::invalid(format!(
            "{what}: length {len} is over PTRDIFF_MAX bytes"
        )));
    }
    if !(ptr as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Fail::invalid(format!("{what} is misaligned")));
    }
    // SAFETY: non-NULL, aligned, at most isize::MAX bytes, and by the contract `len` readable
    // elements that stay unchanged for the duration of the call (the slice does not outlive it).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An optional 16-byte event id: NULL means none.
///
/// # Safety
///
/// A non-NULL `ptr` points to 16 readable bytes.
pub(crate) unsafe fn id_arg(ptr: *const u8) -> Option<[u8; 16]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and by the contract 16 readable bytes (u8 has no alignment).
    Some(unsafe { ptr.cast::<[u8; 16]>().read() })
}

/// Writes `value` to an out-parameter. NULL is `STRATA_INVALID_ARGUMENT`.
///
/// # Safety
///
/// A non-NULL `out` points to memory writable for one `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> Result<(), Fail> {
    if out.is_null() {
        return Err(Fail::invalid(format!("{what} is NULL")));
    }
    if !(out as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Fail::invalid(format!("{what} is misaligned")));
    }
    // SAFETY: non-NULL, aligned, and by the contract writable memory for one T. `write` does
    // not drop the old contents, which may be uninitialised; T is a plain C type (no Drop).
    unsafe { out.write(value) };
    Ok(())
}

/// Checks an out-array of `len` elements: non-NULL (unless `len` is 0), aligned, at most
/// `isize::MAX` bytes. Its elements are then written one by one with `write_out`.
pub(crate) fn check_out_array<T>(ptr: *mut T, len: usize, what: &str) -> Result<(), Fail> {
    if len == 0 {
        return Err(Fail::invalid(format!("{what}: capacity is 0")));
    }
    slice_arg_checks(ptr.cast_const(), len, what)
}

fn slice_arg_checks<T>(ptr: *const T, len: usize, what: &str) -> Result<(), Fail> {
    if ptr.is_null() {
        return Err(Fail::invalid(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    let too_long = len
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize);
    if too_long {
        return Err(Fail::invalid(format!(
            "{what}: length {len} is over PTRDIFF_MAX bytes"
        )));
    }
    if !(ptr as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Fail::invalid(format!("{what} is misaligned")));
    }
    Ok(())
}

/// Clears an out-parameter on entry, if it is not NULL, so that it holds a known value on
/// failure. A misaligned pointer is left alone (the later `write_out` reports it).
///
/// # Safety
///
/// As `write_out`.
pub(crate) unsafe fn clear_out<T>(out: *mut T, value: T) {
    if !out.is_null() && (out as usize).is_multiple_of(std::mem::align_of::<T>()) {
        // SAFETY: as in `write_out`.
        unsafe { out.write(value) };
    }
}

/// Copies `bytes` into a buffer from the C allocator (plus a NUL when `nul`), released by
/// `strata_free`.
pub(crate) fn malloc_copy(bytes: &[u8], nul: bool) -> Result<*mut u8, Fail> {
    let size = bytes.len() + usize::from(nul);
    // SAFETY: malloc has no preconditions; at least one byte so that NULL means failure.
    let buffer = unsafe { libc::malloc(size.max(1)) }.cast::<u8>();
    if buffer.is_null() {
        return Err(Fail::new(
            crate::status::strata_status::STRATA_INTERNAL,
            format!("out of memory allocating {size} bytes"),
        ));
    }
    // SAFETY: `buffer` is a fresh allocation of at least `size` bytes, which cannot overlap
    // `bytes`; the NUL goes at index `bytes.len()` < size when `nul`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer, bytes.len());
        if nul {
            buffer.add(bytes.len()).write(0);
        }
    }
    Ok(buffer)
}

/// Releases a buffer from `malloc_copy`. NULL does nothing.
///
/// # Safety
///
/// `ptr` is NULL or a buffer from `malloc_copy` not freed yet.
pub(crate) unsafe fn malloc_free(ptr: *mut c_void) {
    // SAFETY: by the contract `ptr` is NULL or a buffer this library returned (allocated with
    // malloc in `malloc_copy`) that was not freed yet; free(NULL) does nothing.
    unsafe { libc::free(ptr) }
}
