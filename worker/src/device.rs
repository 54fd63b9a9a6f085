//! Device selection and CPU thread configuration.
//!
//! `auto` picks CUDA device 0 when libtorch sees one, else the CPU. Asking for `cuda` on a
//! machine without it is an error at start-up rather than a silent CPU fallback: a sweep
//! planned for GPUs would otherwise crawl without anyone noticing.

use advsweep_settings::DeviceSetting;
use tch::Device;

/// Resolves the `device` setting (or `--device` flag) to a device.
pub fn select(choice: DeviceSetting) -> anyhow::Result<Device> {
    match choice {
        DeviceSetting::Cpu => Ok(Device::Cpu),
        DeviceSetting::Cuda => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                anyhow::bail!(
                    "--device cuda was requested but libtorch sees no CUDA device \
                     (is this a CUDA build of libtorch, and is the driver loaded?)"
                )
            }
        }
        DeviceSetting::Auto => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
    }
}

/// Per-process settings for `device`: on CUDA, cuDNN's benchmark mode (each convolution shape
/// is timed once and its fastest algorithm kept; shapes repeat every batch in training and
/// evaluation).
pub fn configure(device: Device) {
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
}

/// The name the coordinator shows: "cpu", "cuda:0", …
pub fn label(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// The default intra-op thread count: every core this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Sets libtorch's intra-op thread count. OpenMP keeps this per calling thread in some
/// builds, so it is called again on the thread that runs each job.
pub fn set_threads(threads: usize) {
    tch::set_num_threads(i32::try_from(threads.max(1)).unwrap_or(i32::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_cpu_selection() -> anyhow::Result<()> {
        assert_eq!(label(Device::Cpu), "cpu");
        assert_eq!(label(Device::Cuda(1)), "cuda:1");
        assert_eq!(select(DeviceSetting::Cpu)?, Device::Cpu);
        let auto = select(DeviceSetting::Auto)?;
        assert_eq!(auto == Device::Cpu, !tch::Cuda::is_available());
        Ok(())
    }
}
