//! bf16 autocast for libtorch, on CPU and CUDA.
//!
//! tch 0.26 exposes autocast only as `tch::autocast(enabled, f)`: CUDA only, at libtorch's
//! default CUDA dtype (fp16, which needs a gradient scaler to train safely). Training in bf16
//! — fp32 weights and optimizer state, matrix products and convolutions in bfloat16, what
//! `torch.autocast(device, dtype=torch.bfloat16)` does — needs `at::autocast::set_autocast_dtype`
//! and the per-device-type switches, which this crate calls through a few lines of C++
//! (`csrc/autocast.cpp`). It is the one crate of advsweep with `unsafe` code: the FFI calls
//! below, nothing else.
//!
//! libtorch's autocast state is thread-local, so an [`Autocast`] guard is neither `Send` nor
//! `Sync`: it must be dropped on the thread that made it, which restores the previous state.

use std::ffi::c_int;
use std::marker::PhantomData;

// Links libtorch (torch-sys's link directives) into every binary that uses this crate, even
// one that uses nothing else of torch-sys, such as this crate's own tests.
extern crate torch_sys as _;

#[allow(unsafe_code)]
mod ffi {
    use std::ffi::c_int;

    unsafe extern "C" {
        pub fn advsweep_autocast_enter(
            cuda: c_int,
            prev_enabled: *mut c_int,
            prev_dtype: *mut c_int,
        ) -> c_int;
        pub fn advsweep_autocast_exit(cuda: c_int, prev_enabled: c_int, prev_dtype: c_int)
        -> c_int;
        pub fn advsweep_autocast_is_enabled(cuda: c_int) -> c_int;
    }

    pub fn enter(cuda: c_int) -> Option<(c_int, c_int)> {
        let (mut enabled, mut dtype) = (0, 0);
        // SAFETY: both pointers are to live locals; the C++ side catches every exception.
        let rc = unsafe { advsweep_autocast_enter(cuda, &mut enabled, &mut dtype) };
        (rc == 0).then_some((enabled, dtype))
    }

    pub fn exit(cuda: c_int, enabled: c_int, dtype: c_int) -> bool {
        // SAFETY: plain integers; the C++ side catches every exception.
        unsafe { advsweep_autocast_exit(cuda, enabled, dtype) == 0 }
    }

    pub fn is_enabled(cuda: c_int) -> Option<bool> {
        // SAFETY: a plain integer; the C++ side catches every exception.
        match unsafe { advsweep_autocast_is_enabled(cuda) } {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

/// The device types autocast is offered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    Cpu,
    Cuda,
}

impl DeviceType {
    fn code(self) -> c_int {
        match self {
            DeviceType::Cpu => 0,
            DeviceType::Cuda => 1,
        }
    }
}

/// libtorch refused to change its autocast state (it threw; the message stays in libtorch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutocastError(pub &'static str);

impl std::fmt::Display for AutocastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "libtorch could not {}", self.0)
    }
}

impl std::error::Error for AutocastError {}

/// bf16 autocast on one device type, on this thread, until dropped.
#[derive(Debug)]
pub struct Autocast {
    device: DeviceType,
    prev_enabled: c_int,
    prev_dtype: c_int,
    /// Thread-local state: the guard stays on its thread.
    _not_send: PhantomData<*const ()>,
}

impl Autocast {
    /// Turns bf16 autocast on for `device` (nesting like `torch.autocast` blocks do).
    pub fn bf16(device: DeviceType) -> Result<Autocast, AutocastError> {
        let (prev_enabled, prev_dtype) =
            ffi::enter(device.code()).ok_or(AutocastError("enable bf16 autocast"))?;
        Ok(Autocast {
            device,
            prev_enabled,
            prev_dtype,
            _not_send: PhantomData,
        })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // Nothing to report to: restoring plain integers into libtorch's thread-local state
        // does not fail in practice, and a guard must not panic in drop.
        let _ = ffi::exit(self.device.code(), self.prev_enabled, self.prev_dtype);
    }
}

/// Whether autocast is on for `device` on this thread.
pub fn is_enabled(device: DeviceType) -> Result<bool, AutocastError> {
    ffi::is_enabled(device.code()).ok_or(AutocastError("read its autocast state"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_turns_autocast_on_and_restores_it_nested() {
        for device in [DeviceType::Cpu, DeviceType::Cuda] {
            assert_eq!(is_enabled(device), Ok(false));
            {
                let _outer = Autocast::bf16(device).expect("enter");
                assert_eq!(is_enabled(device), Ok(true));
                {
                    let _inner = Autocast::bf16(device).expect("enter nested");
                    assert_eq!(is_enabled(device), Ok(true));
                }
                assert_eq!(is_enabled(device), Ok(true), "inner exit kept the outer on");
            }
            assert_eq!(is_enabled(device), Ok(false));
        }
    }
}
