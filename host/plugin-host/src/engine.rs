//! The wasmtime engine: pooling allocator, epoch interruption with a ticker thread, and the
//! on-disk compilation cache keyed by the hash of the component and the engine settings.

use crate::error::HostError;
use crate::limits::PoolLimits;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

/// Bytes of each linear memory slot kept resident between calls.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

pub(crate) fn engine(pool: &PoolLimits, cache_dir: Option<&Path>) -> Result<Engine, HostError> {
    let engine_error = |e: wasmtime::Error| HostError::Engine(format!("{e:#}"));
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(512 * 1024);
    let instances = pool.max_instances.max(1);
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(16))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_core_instances_per_component(16)
        .max_memories_per_component(2)
        .max_tables_per_component(4)
        .max_memory_size(pool.max_memory_mib as usize * 1024 * 1024)
        // Reset a used slot by rewriting only its dirty pages (found with PAGEMAP_SCAN where
        // the kernel has it) instead of `madvise`: no page faults on the next call and no TLB
        // shootdown across threads. This is most of the cost of a fresh instance per call.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 * 1024)
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    if let Some(dir) = cache_dir {
        let cache_error = |e: std::io::Error| {
            HostError::Engine(format!("compile cache `{}`: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(cache_error)?;
        // wasmtime's cache refuses a relative directory, and the default data directory is
        // relative.
        let dir = std::path::absolute(dir).map_err(cache_error)?;
        let mut cache_config = CacheConfig::new();
        cache_config.with_directory(dir);
        config.cache(Some(Cache::new(cache_config).map_err(engine_error)?));
    }
    Engine::new(&config).map_err(engine_error)
}

/// Advances the engine's epoch every tick until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine, tick: std::time::Duration) -> Result<Self, HostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| HostError::Engine(format!("epoch thread: {e}")))?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
