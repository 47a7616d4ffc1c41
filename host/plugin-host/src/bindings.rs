//! The only place that runs `bindgen!` over `wit/`: one module per supported contract version,
//! one sub-module per world. The credential-store and ticketing worlds reuse the import
//! interfaces generated for the AA world, so the host implements each import once.

pub mod v0_1_0 {
    //! `gatehouse:plugin@0.1.0`, the version under development in `wit/`.

    pub mod aa {
        //! The `aa-plugin` world, and the shared import interfaces.
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "gatehouse:plugin/aa-plugin@0.1.0",
            exports: { default: async },
        });
    }

    /// `bindgen!` for a world whose imports are the AA world's: the generated import
    /// interfaces are reused, not generated again.
    macro_rules! bindgen_with_aa_imports {
        ($world:literal) => {
            wasmtime::component::bindgen!({
                path: "../../wit",
                world: $world,
                exports: { default: async },
                with: {
                    "gatehouse:plugin/types": super::aa::gatehouse::plugin::types,
                    "gatehouse:plugin/log": super::aa::gatehouse::plugin::log,
                    "gatehouse:plugin/config": super::aa::gatehouse::plugin::config,
                    "gatehouse:plugin/secrets": super::aa::gatehouse::plugin::secrets,
                    "gatehouse:plugin/cache": super::aa::gatehouse::plugin::cache,
                    "gatehouse:plugin/clock": super::aa::gatehouse::plugin::clock,
                    "gatehouse:plugin/cookies": super::aa::gatehouse::plugin::cookies,
                },
            });
        };
    }

    pub mod credential_store {
        //! The `credential-store-plugin` world.
        bindgen_with_aa_imports!("gatehouse:plugin/credential-store-plugin@0.1.0");
    }

    pub mod ticketing {
        //! The `ticketing-plugin` world.
        bindgen_with_aa_imports!("gatehouse:plugin/ticketing-plugin@0.1.0");
    }
}
