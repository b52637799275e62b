//! Where the engine runs and in what precision: `--device cpu|cuda|cuda:N`, `dtype = "f32"|"bf16"`,
//! and how much device memory a run uses.
//!
//! CUDA needs the crate's `cuda` feature (candle's CUDA backend). Without it, asking for a CUDA
//! device is an error that says how to rebuild; everything else compiles and runs the same.

use anyhow::{bail, Result};
use candle_core::{DType, Device};

/// The error for a CUDA device in a build without the `cuda` feature.
pub const NO_CUDA: &str = "this host was built without the cuda feature; rebuild with --features cuda";

/// Whether this build has candle's CUDA backend.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// A device by name, before it is opened: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        match spec {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match spec.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => bail!("unknown device `{spec}` (use cpu, cuda or cuda:N)"),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Opens the device named by `spec`: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
///
/// A CUDA device runs float32 matrix products in full float32 (no TF32, as PyTorch's default), and
/// keeps freed memory in its pool instead of handing it back to the driver at every synchronisation
/// (as PyTorch's caching allocator does); see [`MemoryMonitor`].
pub fn open_device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.open()
}

impl DeviceSpec {
    /// Opens the device, as [`open_device`] describes.
    pub fn open(self) -> Result<Device> {
        let ordinal = match self {
            DeviceSpec::Cpu => return Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => n,
        };
        if !CUDA_BUILT {
            bail!(NO_CUDA);
        }
        let device = Device::new_cuda(ordinal).map_err(|e| {
            // candle's message, without the backtrace it may carry on the following lines.
            let message = e.to_string();
            anyhow::anyhow!("cannot open cuda:{ordinal}: {}", message.lines().next().unwrap_or_default())
        })?;
        #[cfg(feature = "cuda")]
        {
            candle_core::cuda_backend::set_gemm_reduced_precision_f32(false);
            candle_core::cuda_backend::set_gemm_reduced_precision_bf16(false);
            cuda::keep_pool_memory(&device)?;
        }
        Ok(device)
    }
}

/// `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The training dtype named by `spec`: `f32`/`float32` or `bf16`/`bfloat16`.
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec.trim() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => bail!("unknown dtype `{other}` (use f32 or bf16)"),
    }
}

/// `f32` or `bf16` (candle's names for the others).
pub fn dtype_name(dtype: DType) -> &'static str {
    dtype.as_str()
}

/// Bytes of one element of `dtype`.
pub fn dtype_bytes(dtype: DType) -> usize {
    dtype.size_in_bytes()
}

/// Device memory as the driver reports it: bytes in use on the whole device (every process, the CUDA
/// context included: what `nvidia-smi` shows) and its total. `None` on the CPU.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    {
        if let Device::Cuda(_) = device {
            return cuda::mem_info(device);
        }
    }
    let _ = device;
    None
}

/// Peak device memory of a run, for CUDA devices: [`MemoryMonitor::poll`] reads the device's memory in
/// use (`cuMemGetInfo`: total - free) and keeps the largest value seen; poll after each phase of a step.
///
/// Since [`open_device`] sets the memory pool to keep what is freed, memory in use never drops between
/// polls, so polling catches the peak of what the pool holds (PyTorch's `max_memory_reserved` plus the
/// CUDA context). [`MemoryMonitor::peak_allocated`] is the pool's own high-water mark of memory handed
/// out to tensors (PyTorch's `max_memory_allocated`).
#[derive(Debug, Clone)]
pub struct MemoryMonitor {
    device: Device,
    /// Memory in use when the monitor was made (the context, other processes), and the total.
    pub baseline: Option<(u64, u64)>,
    peak_used: Option<u64>,
}

impl MemoryMonitor {
    pub fn new(device: &Device) -> MemoryMonitor {
        let baseline = device_memory(device);
        MemoryMonitor { device: device.clone(), baseline, peak_used: baseline.map(|(used, _)| used) }
    }

    /// Reads the memory in use now; cheap (no synchronisation), a no-op on the CPU.
    pub fn poll(&mut self) {
        if let Some((used, _)) = device_memory(&self.device) {
            self.peak_used = Some(self.peak_used.map_or(used, |p| p.max(used)));
        }
    }

    /// The largest device memory in use seen by [`MemoryMonitor::poll`] (bytes; `None` on the CPU).
    pub fn peak_used(&self) -> Option<u64> {
        self.peak_used
    }

    /// The run's peak: on a CUDA device what [`MemoryMonitor::poll`] saw and the pool's high-water
    /// mark, on the CPU the process's peak resident set.
    pub fn peak(&self) -> PeakMemory {
        match self.peak_used {
            Some(used) => PeakMemory::Device { used, allocated: self.peak_allocated() },
            None => PeakMemory::Rss(peak_rss_kib()),
        }
    }

    /// The memory pool's high-water mark of memory allocated to tensors (bytes; `None` on the CPU or
    /// where the driver has no such pool).
    pub fn peak_allocated(&self) -> Option<u64> {
        #[cfg(feature = "cuda")]
        {
            if let Device::Cuda(_) = &self.device {
                return cuda::pool_used_high(&self.device);
            }
        }
        None
    }
}

/// The peak memory use of a run, as measured on its device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PeakMemory {
    /// Bytes in use on the CUDA device (every process and the context included), and the pool's peak
    /// of memory allocated to tensors where the driver reports it.
    Device { used: u64, allocated: Option<u64> },
    /// The process's peak resident set in KiB (CPU runs), where `/proc` has it.
    Rss(Option<u64>),
}

impl std::fmt::Display for PeakMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeakMemory::Device { used, allocated: Some(a) } => {
                write!(f, "{} device memory in use, {} allocated to tensors", mib(*used), mib(*a))
            }
            PeakMemory::Device { used, allocated: None } => write!(f, "{} device memory in use", mib(*used)),
            PeakMemory::Rss(Some(kib)) => write!(f, "{} resident (peak RSS)", mib(kib * 1024)),
            PeakMemory::Rss(None) => write!(f, "unknown"),
        }
    }
}

/// `VmHWM` of `/proc/self/status` (the process's peak resident set) in KiB; `None` off Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What a training run holds in memory, estimated before it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// The model's parameters in the training dtype.
    pub params: u64,
    /// Gradients, float32 (cast from the dtype's gradients at once; those are counted in `params`'s
    /// dtype once more while the backward pass runs).
    pub grads: u64,
    /// AdamW: two float32 moments per parameter, plus a float32 master copy when the dtype is not f32.
    pub optimizer: u64,
    /// Activations kept for the backward pass of one micro-batch (see [`MemoryEstimate::new`]).
    pub activations: u64,
    /// With a LoRA adapter ([`MemoryEstimate::with_lora`]): the trainable scalars, and the total a full
    /// fine-tune of the same model would need.
    pub lora: Option<(u64, u64)>,
    /// The part of `activations` kept only for the base weights' gradients (the hand-written pass drops
    /// it when the base is frozen).
    weight_grad_inputs: u64,
}

impl MemoryEstimate {
    /// The estimate for a decoder of `config`'s shape with `num_params` parameters, trained in `dtype`
    /// on micro-batches of `batch` rows of `seq` tokens.
    ///
    /// Activations are what the autograd graph keeps alive until backward, plus the head's backward
    /// temporaries (the peak comes when the backward pass starts). With B = batch, T = seq, H = hidden,
    /// I = intermediate, n heads, k kv heads, head dim d, V = vocab, L = layers, e = bytes of dtype, and
    /// c = 4 when dtype is not float32 (a float32 copy is kept beside the dtype one), else 0:
    ///
    /// * per layer and token, in dtype: ~12 hidden-sized tensors (norm inputs and outputs, residual
    ///   sums, attention output and its projection), ~6 copies of q/k/v (projection, bias, head layout,
    ///   rope), 4 intermediate-sized ones (gate, up, silu, product); plus the norms' float32 copies
    ///   (2 norms × 2 × 4·H): `e·(12H + 6(n+2k)d + 4I) + 16H`;
    /// * per layer, the attention matrices `[B, n, T, T]`: the scores and the probabilities in dtype,
    ///   and the float32 probabilities: `2e + c` bytes each (the softmax's own temporaries are not kept:
    ///   [`crate::ops::masked_softmax`]);
    /// * the head: logits in dtype and float32 (`e + c`), and ~3 float32 logit-sized temporaries of the
    ///   log-softmax's backward (12).
    ///
    /// `L·B·T·(e·(12H + 6(n+2k)d + 4I) + 16H) + L·B·n·T²·(2e + c) + B·T·V·(e + c + 12)`.
    ///
    /// On the CPU in float32 training runs the hand-written pass instead (`model/backprop.rs`), whose
    /// tape per layer and token is, in float32, the layer's input, both norm outputs and the residual
    /// sum (4H), q and the attention output (2nd), k and v (2kd), gate, up and their product (3I), the
    /// attention log-sum-exps (n) and two inverse RMS; attention is tiled, so nothing grows with T². The
    /// head keeps the logits (turned into their gradient in place) and the final norm's input and output,
    /// and the backward pass holds about one more layer's worth while it runs:
    /// `(L + 1)·B·T·4·(4H + 2nd + 2kd + 3I + n + 2) + B·T·4·(V + 2H)`. Of that, both norm outputs and
    /// the SwiGLU product, `(L + 1)·B·T·4·(2H + I)`, serve only the weight gradients: with a frozen base
    /// ([`MemoryEstimate::with_lora`]) they are not kept.
    pub fn new(
        config: &crate::ModelConfig,
        num_params: usize,
        device: &Device,
        dtype: DType,
        batch: usize,
        seq: usize,
    ) -> Self {
        let e = dtype_bytes(dtype) as u64;
        let c = if dtype == DType::F32 { 0 } else { 4 };
        let (b, t) = (batch as u64, seq as u64);
        let (h, i, v, l) = (
            config.hidden_size as u64,
            config.intermediate_size as u64,
            config.vocab_size as u64,
            config.num_hidden_layers as u64,
        );
        let (n, k, d) = (config.num_attention_heads as u64, config.num_key_value_heads as u64, config.head_dim as u64);
        let (layers, head, weight_grad_inputs) = if device.is_cpu() && dtype == DType::F32 {
            let per_token = 4 * h + 2 * n * d + 2 * k * d + 3 * i + n + 2;
            ((l + 1) * b * t * 4 * per_token, b * t * 4 * (v + 2 * h), (l + 1) * b * t * 4 * (2 * h + i))
        } else {
            let layers =
                l * b * t * (e * (12 * h + 6 * (n + 2 * k) * d + 4 * i) + 16 * h) + l * b * n * t * t * (2 * e + c);
            (layers, b * t * v * (e + c + 12), 0)
        };
        let p = num_params as u64;
        MemoryEstimate {
            params: p * e,
            grads: p * 4,
            optimizer: p * crate::AdamW::state_bytes_per_param(dtype) as u64,
            activations: layers + head,
            lora: None,
            weight_grad_inputs,
        }
    }

    /// The estimate for training `model` as it stands (on its device, in its dtype; with its LoRA
    /// adapter, if one is attached: [`MemoryEstimate::with_lora`]) on micro-batches of `batch` rows of
    /// `seq` tokens.
    pub fn for_model(model: &crate::Model, batch: usize, seq: usize) -> Self {
        let (device, dtype) = (model.device(), model.dtype());
        let estimate = MemoryEstimate::new(model.config(), model.num_params(), device, dtype, batch, seq);
        match model.lora() {
            Some(_) => estimate.with_lora(model.num_trainable_params()),
            None => estimate,
        }
    }

    /// The same run with a LoRA adapter of `trainable` float32 scalars: gradients and AdamW state for
    /// the adapter only (no master copy: adapters are float32), the frozen base's parameters as before,
    /// no activations kept for base weight gradients, and the adapter's own products (`x·Aᵀ`, r per
    /// token and projection, recomputed in backward) too small to count.
    pub fn with_lora(self, trainable: usize) -> Self {
        let t = trainable as u64;
        let full = self.total();
        MemoryEstimate {
            grads: t * 4,
            optimizer: t * crate::AdamW::state_bytes_per_param(DType::F32) as u64,
            activations: self.activations - self.weight_grad_inputs,
            lora: Some((t, full)),
            ..self
        }
    }

    pub fn total(&self) -> u64 {
        self.params + self.grads + self.optimizer + self.activations
    }

    /// The report printed at the start of `host train` and `host bench`: one block of lines.
    pub fn report(&self, device: &Device, dtype: DType) -> String {
        let mut lines = vec![
            format!("memory estimate ({}, {}):", device_name(device), dtype_name(dtype)),
            format!("  parameters     {:>10}", mib(self.params)),
            format!("  gradients      {:>10}  (f32)", mib(self.grads)),
            format!(
                "  optimizer      {:>10}  (AdamW moments{}, f32)",
                mib(self.optimizer),
                if dtype == DType::F32 { "" } else { " + master weights" }
            ),
            format!("  activations    {:>10}  (one micro-batch, estimate)", mib(self.activations)),
            format!("  total          {:>10}", mib(self.total())),
        ];
        if let Some((trainable, full)) = self.lora {
            lines.push(format!(
                "  LoRA           {trainable} trainable parameters: {:.0} % of a full fine-tune's {}",
                100.0 * self.total() as f64 / full.max(1) as f64,
                mib(full)
            ));
        }
        if let Some((used, total)) = device_memory(device) {
            lines.push(format!("  device         {} in use of {}", mib(used), mib(total)));
        }
        lines.join("\n")
    }
}

/// Bytes as `1234.5 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The CUDA driver calls behind [`super::MemoryMonitor`], through candle's cudarc.
    use anyhow::Result;
    use candle_core::cuda_backend::cudarc::driver::sys;
    use candle_core::Device;

    fn context(device: &Device) -> Option<std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaContext>> {
        let cuda = device.as_cuda_device().ok()?;
        Some(cuda.cuda_stream().context().clone())
    }

    /// `(total - free, total)` from `cuMemGetInfo`.
    pub fn mem_info(device: &Device) -> Option<(u64, u64)> {
        let (free, total) = context(device)?.mem_get_info().ok()?;
        Some(((total - free) as u64, total as u64))
    }

    fn default_pool(device: &Device) -> Option<sys::CUmemoryPool> {
        let ctx = context(device)?;
        ctx.bind_to_thread().ok()?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: a valid device handle and an out-pointer to a pool handle.
        let status = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) };
        (status == sys::CUresult::CUDA_SUCCESS && !pool.is_null()).then_some(pool)
    }

    /// Keep freed memory in the device's default pool (release threshold: unlimited), as a caching
    /// allocator does; by default the pool hands it back to the driver at every synchronisation.
    pub fn keep_pool_memory(device: &Device) -> Result<()> {
        let Some(pool) = default_pool(device) else {
            return Ok(()); // no stream-ordered allocator: cudarc allocates synchronously
        };
        let mut threshold: u64 = u64::MAX;
        // SAFETY: the attribute takes a cuuint64_t.
        let status = unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            )
        };
        if status != sys::CUresult::CUDA_SUCCESS {
            anyhow::bail!("cannot set the CUDA memory pool's release threshold: {status:?}");
        }
        Ok(())
    }

    /// The default pool's `CU_MEMPOOL_ATTR_USED_MEM_HIGH`.
    pub fn pool_used_high(device: &Device) -> Option<u64> {
        let pool = default_pool(device)?;
        let mut value: u64 = 0;
        // SAFETY: the attribute is a cuuint64_t.
        let status = unsafe {
            sys::cuMemPoolGetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut value as *mut u64 as *mut std::ffi::c_void,
            )
        };
        (status == sys::CUresult::CUDA_SUCCESS && value > 0).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_dtypes_parse() -> Result<()> {
        assert!(open_device("cpu")?.is_cpu());
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let err = open_device(bad).unwrap_err().to_string();
            assert!(err.contains("unknown device"), "{bad}: {err}");
        }
        if !CUDA_BUILT {
            for spec in ["cuda", "cuda:0", "cuda:3"] {
                assert_eq!(open_device(spec).unwrap_err().to_string(), NO_CUDA);
            }
        }
        assert_eq!(parse_dtype("bf16")?, DType::BF16);
        assert_eq!(parse_dtype("bfloat16")?, DType::BF16);
        assert_eq!(parse_dtype("float32")?, DType::F32);
        assert!(parse_dtype("f16").unwrap_err().to_string().contains("use f32 or bf16"));
        assert_eq!(device_name(&Device::Cpu), "cpu");
        assert!(device_memory(&Device::Cpu).is_none());
        Ok(())
    }

    #[test]
    fn memory_estimate_counts_master_weights_only_for_bf16() -> Result<()> {
        let raw = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        });
        let config = crate::ModelConfig::from_json(raw, std::path::Path::new("m"))?;
        let f32 = MemoryEstimate::new(&config, 1000, &Device::Cpu, DType::F32, 2, 16);
        let bf16 = MemoryEstimate::new(&config, 1000, &Device::Cpu, DType::BF16, 2, 16);
        assert_eq!((f32.params, f32.grads, f32.optimizer), (4000, 4000, 8000));
        assert_eq!((bf16.params, bf16.grads, bf16.optimizer), (2000, 4000, 12000));
        // The CPU float32 pass tiles attention: its activations grow linearly in the row length; the
        // autograd pass (bf16 here) keeps [B, heads, T, T] matrices.
        let longer = |dtype| MemoryEstimate::new(&config, 1000, &Device::Cpu, dtype, 2, 32).activations;
        assert_eq!(longer(DType::F32), 2 * f32.activations);
        assert!(longer(DType::BF16) > 2 * bf16.activations && bf16.activations > 0);
        let report = bf16.report(&Device::Cpu, DType::BF16);
        assert!(report.starts_with("memory estimate (cpu, bf16):") && report.contains("master weights"), "{report}");
        Ok(())
    }
}

#[cfg(test)]
mod spec_tests {
    use super::DeviceSpec;

    #[test]
    fn device_names_parse_and_print_back() {
        for (text, spec) in [("cpu", DeviceSpec::Cpu), ("cuda", DeviceSpec::Cuda(0)), (" cuda:3 ", DeviceSpec::Cuda(3))]
        {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec);
        }
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
        for bad in ["gpu0", "cuda:", "cuda:-1", "cuda:x"] {
            let error = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(error.contains("unknown device") && error.contains(bad), "{error}");
        }
    }
}
