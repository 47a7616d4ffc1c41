#!/usr/bin/env bash
# Builds the reference plugins in plugins/ (their own cargo workspace) to wasm32-wasip2 in
# release mode, and lays each one out as an installable package beside its manifest:
#
#   $GATEHOUSE_PLUGINS_DIR/<name>/plugin.toml
#   $GATEHOUSE_PLUGINS_DIR/<name>/plugin.wasm
#
# GATEHOUSE_PLUGINS_DIR defaults to $CARGO_TARGET_DIR/gatehouse-plugins (CARGO_TARGET_DIR
# defaults to /var/tmp/gatehouse-target, as in .ci/run). The host's tests and benchmark look
# there (host/plugin-host/tests/support/mod.rs) and fail if a plugin is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
target_dir="${CARGO_TARGET_DIR:-/var/tmp/gatehouse-target}"
out_dir="${GATEHOUSE_PLUGINS_DIR:-$target_dir/gatehouse-plugins}"
build_dir="$target_dir/plugins-build"
plugins=(totp-mfa ticket-required rest-ticketing http-credstore hostile)

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
CARGO_TARGET_DIR="$build_dir" cargo build \
    --manifest-path plugins/Cargo.toml --locked --release --target wasm32-wasip2 \
    $(printf -- '-p %s ' "${plugins[@]}")

for name in "${plugins[@]}"; do
    mkdir -p "$out_dir/$name"
    cp "plugins/$name/plugin.toml" "$out_dir/$name/plugin.toml"
    cp "$build_dir/wasm32-wasip2/release/${name//-/_}.wasm" "$out_dir/$name/plugin.wasm"
    printf '%-16s %8d bytes  %s\n' "$name" "$(stat -c %s "$out_dir/$name/plugin.wasm")" "$out_dir/$name"
done
