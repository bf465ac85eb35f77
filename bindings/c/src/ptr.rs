//! Every `unsafe` of the C ABI lives here: turning the caller's pointers into Rust references,
//! slices and strings, and turning handles into boxes and back. The API functions call these and
//! are safe code otherwise.
//!
//! The contract with the caller, stated in the header: a non-NULL pointer given with a length
//! points to that many readable elements that stay unchanged for the duration of the call; a
//! non-NULL `const char *` points to a NUL-terminated string; a non-NULL out-pointer points to
//! writable memory of its type; a handle is one this library returned and that was not freed.
//! What can be checked without reading invalid memory is checked: NULL, lengths over
//! `isize::MAX`, misalignment, and a handle's magic number (wrong type, closed).

use std::ffi::CStr;
use std::os::raw::{c_char, c_void};

use crate::status::Fail;

/// A type handed to C as an opaque pointer. Every handle is `#[repr(C)]` with its magic number
/// first, so reading the first 8 bytes of any handle of this library is in bounds.
pub(crate) trait Handle {
    /// This type's magic number.
    const MAGIC: u64;
    /// The handle's name in messages.
    const NAME: &'static str;
}

/// Written over a handle's magic number just before it is freed.
const FREED: u64 = 0xdead_dead_dead_dead;

/// Boxes `value` and returns the pointer handed to C.
pub(crate) fn into_handle<T: Handle>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

fn check_handle<T: Handle>(handle: *const T) -> Result<(), Fail> {
    if handle.is_null() {
        return Err(Fail::misuse(format!("the {} handle is NULL", T::NAME)));
    }
    if !(handle as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Fail::misuse(format!(
            "the {} handle is misaligned",
            T::NAME
        )));
    }
    // SAFETY: the handle is non-NULL and aligned, and by the caller's contract it is a handle
    // of this library that was not freed; every handle type is #[repr(C)] and starts with a u64
    // magic number, so these 8 bytes are in bounds whatever the handle's type.
    let magic = unsafe { handle.cast::<u64>().read() };
    if magic != T::MAGIC {
        return Err(Fail::misuse(format!(
            "not a {} handle (a handle of another type, or freed)",
            T::NAME
        )));
    }
    Ok(())
}

/// The handle behind `handle`, after checking NULL, alignment and the magic number.
pub(crate) fn handle_ref<'a, T: Handle>(handle: *const T) -> Result<&'a T, Fail> {
    check_handle(handle)?;
    // SAFETY: checked above: non-NULL, aligned, and carrying T's magic number, so (by the
    // contract) a live `Box<T>` made by `into_handle`; handles are only freed by `free_handle`,
    // which the caller must not call while another call uses the handle.
    Ok(unsafe { &*handle })
}

/// Frees a handle made by `into_handle`. NULL is accepted and does nothing.
pub(crate) fn free_handle<T: Handle>(handle: *mut T) -> Result<(), Fail> {
    if handle.is_null() {
        return Ok(());
    }
    check_handle(handle.cast_const())?;
    // SAFETY: checked as in `handle_ref`: a live Box<T> from `into_handle`. The magic is
    // overwritten first so that a stale copy of the pointer is less likely to pass the check.
    unsafe {
        handle.cast::<u64>().write(FREED);
        drop(Box::from_raw(handle));
    }
    Ok(())
}

/// A NUL-terminated UTF-8 string argument. NULL or invalid UTF-8 is `STRATA_INVALID_ARGUMENT`.
pub(crate) fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Fail> {
    opt_str_arg(ptr, what)?.ok_or_else(|| Fail::invalid(format!("{what} is NULL")))
}

/// A NUL-terminated UTF-8 string argument that may be NULL.
pub(crate) fn opt_str_arg<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>, Fail> {
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
pub(crate) fn slice_arg<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], Fail> {
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
pub(crate) fn id_arg(ptr: *const u8) -> Option<[u8; 16]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and by the contract 16 readable bytes (u8 has no alignment).
    Some(unsafe { ptr.cast::<[u8; 16]>().read() })
}

/// Writes `value` to an out-parameter. NULL is `STRATA_INVALID_ARGUMENT`.
pub(crate) fn write_out<T>(out: *mut T, value: T, what: &str) -> Result<(), Fail> {
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
pub(crate) fn clear_out<T>(out: *mut T, value: T) {
    if !out.is_null() && (out as usize).is_multiple_of(std::mem::align_of::<T>()) {
        // SAFETY: as in `write_out`.
        unsafe { out.write(value) };
    }
}

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
}

/// Copies `bytes` into a buffer from the C allocator (plus a NUL when `nul`), released by
/// `strata_free`.
pub(crate) fn malloc_copy(bytes: &[u8], nul: bool) -> Result<*mut u8, Fail> {
    let size = bytes.len() + usize::from(nul);
    // SAFETY: malloc has no preconditions; at least one byte so that NULL means failure.
    let buffer = unsafe { malloc(size.max(1)) }.cast::<u8>();
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
pub(crate) fn malloc_free(ptr: *mut c_void) {
    // SAFETY: by the contract `ptr` is NULL or a buffer this library returned (allocated with
    // malloc in `malloc_copy`) that was not freed yet; free(NULL) does nothing.
    unsafe { free(ptr) }
}
