//! `runner doctor`: what this machine offers the harness, in one screen.

use std::path::Path;

use anyhow::Result;

use crate::device::{self, DeviceChoice};
use crate::{data, libtorch};

/// Prints libtorch, CPU, CUDA (which `libtorch_cuda.so` loaded, from where, and the devices or
/// why there are none) and data status. Fails (exit status 1) when the libtorch is the wrong
/// one, and, after the whole report, when the `--device` asked for cannot train here
/// (`--device cuda` without a usable GPU) or when training could not read the data folder
/// (damaged, or named by `--data-dir` or `CIFAR10_DIR` and absent), so that scripts can check
/// a machine with it; `--device auto` on a machine without a GPU succeeds, training on the
/// CPU, and so does an absent default data folder (`train` downloads it).
pub fn run(choice: DeviceChoice, data_cli: Option<&Path>) -> Result<()> {
    let data_dir = &data::resolve_dir(data_cli);
    let torch = libtorch::check()?;
    println!(
        "libtorch      {} ({})",
        torch.version.as_deref().unwrap_or("version unknown"),
        torch.lib_dir.display()
    );
    if torch.lib_dir != Path::new(libtorch::LINKED_LIB_DIR) {
        println!("              (built against {})", libtorch::LINKED_LIB_DIR);
    }
    println!(
        "cpu threads   {} ({}; {})",
        tch::get_num_threads(),
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        cpu_vector_units()
    );
    let yes = |b: bool| if b { "yes" } else { "no" };
    let (amx, avx512) = cpu_bf16();
    println!(
        "cpu bf16      AMX-BF16 {}, AVX512-BF16 {}: {}",
        yes(amx),
        yes(avx512),
        if amx || avx512 {
            "--precision bf16 is expected to be faster than fp32 here"
        } else {
            "--precision bf16 works but is likely slower than fp32 here"
        }
    );
    let available: Vec<&str> = models::fused::FusedIsa::on_this_cpu()
        .into_iter()
        .map(models::fused::FusedIsa::name)
        .collect();
    println!(
        "cpu fused     BN–ReLU kernels run {} (this CPU: {}; RESNET_FUSED_ISA picks another)",
        models::fused::FusedIsa::current().name(),
        available.join(", ")
    );
    if let Some(warning) = models::fused::isa_warning() {
        println!("              {warning}");
    }

    if choice == DeviceChoice::Cpu {
        println!("cuda          not probed (--device cpu)");
    } else {
        let load = device::load_cuda();
        match &load.loaded_from {
            Some(path) => println!("libtorch_cuda {}", path.display()),
            None => println!("libtorch_cuda not found"),
        }
        for attempt in &load.attempts {
            println!("              - {attempt}");
        }
        let count = if load.loaded_from.is_some() {
            tch::Cuda::device_count()
        } else {
            0
        };
        if load.loaded_from.is_none() {
            println!("cuda          no (libtorch_cuda.so not found)");
        } else if count == 0 {
            println!(
                "cuda          no CUDA device: {}",
                device::no_device_reason()
            );
        } else {
            println!("cuda          yes, {count} device(s)");
            for index in 0..count {
                match device::gpu_info(index as i32) {
                    Ok(gpu) => println!(
                        "  cuda:{index}      {} ({:.1} GiB)",
                        gpu.name,
                        gpu.total_memory_bytes as f64 / f64::from(1u32 << 30)
                    ),
                    Err(err) => println!("  cuda:{index}      (no details: {err})"),
                }
            }
            let cudnn = tch::utils::version_cudnn();
            if tch::Cuda::cudnn_is_available() && cudnn > 0 {
                println!(
                    "cudnn         {}.{}.{}",
                    cudnn / 10000,
                    (cudnn / 100) % 100,
                    cudnn % 100
                );
            } else {
                println!("cudnn         not available");
            }
        }
    }

    let resolved = device::resolve(choice);
    match &resolved {
        Ok(resolved) => println!(
            "training on   {} with --device {}{}",
            device::device_name(resolved.device),
            crate::launch::flag_value(&choice),
            if resolved.fallback.is_some() {
                " (no usable CUDA)"
            } else {
                ""
            }
        ),
        Err(err) => println!("training on   nothing: {err:#}"),
    }

    println!("cifar-10      {}", data_dir.display());
    let unusable = match (data_dir.exists(), data::named_by(data_cli)) {
        (false, None) => {
            println!(
                "              absent: `runner train` downloads the original archive into it \
                 (or `runner data fetch`)"
            );
            false
        }
        (false, Some(by)) => {
            println!("              {:#}", data::absent_named(data_dir, by));
            true
        }
        (true, _) => {
            match data::check_usable(data_dir).and_then(|()| data::fingerprint(data_dir)) {
                Ok(print) => {
                    println!(
                        "              six files present, sizes valid; fingerprint {}",
                        print.digest
                    );
                    println!("              {}", print.source);
                    false
                }
                Err(err) => {
                    println!("              {err:#}");
                    true
                }
            }
        }
    };
    if resolved.is_err() {
        anyhow::bail!(
            "--device {} cannot train on this machine (see above)",
            crate::launch::flag_value(&choice)
        );
    }
    anyhow::ensure!(
        !unusable,
        "training cannot read the CIFAR-10 folder {} (see above)",
        data_dir.display()
    );
    Ok(())
}

/// A one-line description of a training device, for results' provenance.
pub fn describe_device(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(i) => match device::gpu_info(i as i32) {
            Ok(gpu) => format!("cuda:{i} {}", gpu.name),
            Err(_) => format!("cuda:{i}"),
        },
        _ => format!(
            "cpu {} ({} threads, {})",
            cpu_model().unwrap_or_else(|| "unknown".into()),
            tch::get_num_threads(),
            cpu_vector_units()
        ),
    }
}

/// The CPU's widest vector instructions and its bf16 hardware, e.g. `AVX-512, AVX512-BF16` or
/// `AVX2`: CPUs sold under one model name (an AMD EPYC of a cloud machine) differ in these by
/// 3× in speed, so a run's record says which it had.
pub fn cpu_vector_units() -> String {
    use models::fused::FusedIsa;
    let widest = match FusedIsa::on_this_cpu().first() {
        Some(FusedIsa::Avx512) => "AVX-512",
        Some(FusedIsa::Avx2) => "AVX2",
        _ => "no AVX2",
    };
    match cpu_bf16() {
        (true, _) => format!("{widest}, AMX-BF16"),
        (false, true) => format!("{widest}, AVX512-BF16"),
        (false, false) => widest.to_string(),
    }
}

/// Whether this CPU computes bf16 in hardware: (AMX-BF16, AVX512-BF16) from `/proc/cpuinfo`.
pub fn cpu_bf16() -> (bool, bool) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    (flags.contains(&"amx_bf16"), flags.contains(&"avx512_bf16"))
}

/// A warning when bf16 on `device` is likely slower than fp32 (a CPU without bf16 units).
pub fn bf16_warning(device: tch::Device) -> Option<String> {
    let (amx, avx512) = cpu_bf16();
    (device == tch::Device::Cpu && !amx && !avx512).then(|| {
        "precision bf16 on a CPU without AMX-BF16 or AVX512-BF16: it works, but is likely \
         slower than fp32 here"
            .to_string()
    })
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}
