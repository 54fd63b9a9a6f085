// The autocast controls advsweep needs and tch 0.26 does not expose: tch's `autocast` only
// toggles CUDA autocast at its default dtype (fp16); bf16 needs `set_autocast_dtype`, and CPU
// autocast needs the per-device-type calls. Every function catches C++ exceptions (they must
// not unwind into Rust) and reports them as -1.
#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace {
c10::DeviceType device_type(int cuda) {
  return cuda != 0 ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}
}  // namespace

extern "C" {

// Turns bf16 autocast on for the device type on this thread (autocast state is thread-local),
// after writing the previous state to *prev_enabled / *prev_dtype for advsweep_autocast_exit.
int advsweep_autocast_enter(int cuda, int* prev_enabled, int* prev_dtype) {
  try {
    const auto t = device_type(cuda);
    *prev_enabled = at::autocast::is_autocast_enabled(t) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(t));
    at::autocast::set_autocast_dtype(t, at::kBFloat16);
    at::autocast::set_autocast_enabled(t, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return -1;
  }
}

// Restores what advsweep_autocast_enter found; clears the cast-weight cache on the way out of
// the outermost autocast region, as torch.autocast's __exit__ does.
int advsweep_autocast_exit(int cuda, int prev_enabled, int prev_dtype) {
  try {
    const auto t = device_type(cuda);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(t, prev_enabled != 0);
    at::autocast::set_autocast_dtype(t, static_cast<at::ScalarType>(prev_dtype));
    return 0;
  } catch (...) {
    return -1;
  }
}

// 1 when autocast is on for the device type on this thread, 0 when not, -1 on error.
int advsweep_autocast_is_enabled(int cuda) {
  try {
    return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
