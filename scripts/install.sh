#!/usr/bin/env bash
# Installs a release build of vpt under PREFIX (default ~/.local); `make install PREFIX=…`
# builds first, then calls this script, which only copies:
#   PREFIX/bin/vpt                           the host (finds libtorch through its rpath, as the
#                                            built binary does)
#   PREFIX/share/vpt/plugins/libvpt_*.so     lm, vision, reweight and the tiny example modality
#                                            (vpt looks in <exe>/../share/vpt/plugins)
#   PREFIX/share/vpt/sdk/                    the vpt-sdk sources, a standalone crate (what
#                                            `vpt new plugin` depends on)
#   PREFIX/share/vpt/designer-template/      the designer template, building against that SDK
#   PREFIX/share/vpt/examples/*.toml, data/  the example configs and the vendored data they name
#                                            (by paths relative to the config: ../data/…)
# Usage: scripts/install.sh [PREFIX]   (the build is read from $CARGO_TARGET_DIR or ./target)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${1:-${PREFIX:-$HOME/.local}}
RELEASE=${CARGO_TARGET_DIR:-$ROOT/target}/release
PLUGINS=(vpt_lm vpt_vision vpt_reweight vpt_tiny)

die() { echo "install.sh: $*" >&2; exit 1; }

[[ -x $RELEASE/vpt ]] || die "$RELEASE/vpt is missing: run \`make build\` first"
for p in "${PLUGINS[@]}"; do
    [[ -f $RELEASE/lib$p.so ]] || die "$RELEASE/lib$p.so is missing: run \`make build\` first"
done
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
SHARE=$PREFIX/share/vpt

# Copy to a temporary name and rename, so a running vpt keeps its (old) mapped file.
place() { # SRC DEST MODE
    install -D -m "$3" "$1" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
}

place "$RELEASE/vpt" "$PREFIX/bin/vpt" 755
for p in "${PLUGINS[@]}"; do
    place "$RELEASE/lib$p.so" "$SHARE/plugins/lib$p.so" 644
done

# The value of KEY in section [SECTION] of the workspace manifest (one-line entries only).
workspace_value() {
    awk -v sec="[$1]" -v key="$2" '
        /^\[/ { inside = ($0 == sec); next }
        inside && $1 == key && $2 == "=" { sub(/^[^=]*=[ \t]*/, ""); print; exit }
    ' "$ROOT/Cargo.toml"
}

# sdk/Cargo.toml with its workspace inheritance written out (`x.workspace = true` → the
# workspace's value; the [lints] table, a workspace setting, dropped), so that the copy builds
# outside the workspace.
standalone_sdk_manifest() {
    local section="" line key value
    echo "# vpt-sdk as installed by vpt's scripts/install.sh (workspace settings written out)."
    while IFS= read -r line; do
        if [[ $line =~ ^\[(.*)\]$ ]]; then
            section=${BASH_REMATCH[1]}
            [[ $section == lints ]] && continue
        fi
        [[ $section == lints ]] && continue
        if [[ $line =~ ^([A-Za-z0-9_-]+)\.workspace[[:space:]]*=[[:space:]]*true$ ]]; then
            key=${BASH_REMATCH[1]}
            case $section in
                package) value=$(workspace_value workspace.package "$key") ;;
                dependencies) value=$(workspace_value workspace.dependencies "$key") ;;
                *) die "sdk/Cargo.toml: cannot write out \`$line\` in [$section]" ;;
            esac
            [[ -n $value ]] || die "sdk/Cargo.toml: the workspace has no \`$key\` for [$section]"
            echo "$key = $value"
        elif [[ $line != \#* && $line == *workspace* ]]; then
            die "sdk/Cargo.toml: cannot write out \`$line\`"
        else
            echo "$line"
        fi
    done < "$ROOT/sdk/Cargo.toml"
}

# Replace the SDK, the template, the examples and the data wholesale (no stale files from an
# older install).
stage=$(mktemp -d "$SHARE/.install.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/sdk" "$stage/designer-template" "$stage/examples"
cp "$ROOT"/examples/*.toml "$stage/examples/"
cp -R "$ROOT/data" "$stage/data"
cp -R "$ROOT/sdk/src" "$stage/sdk/src"
standalone_sdk_manifest > "$stage/sdk/Cargo.toml"
for f in Cargo.lock README.md build.rs src; do
    cp -R "$ROOT/examples/designer-template/$f" "$stage/designer-template/$f"
done
# The template names the SDK at ../../sdk (its place in the repository); installed, it is ../sdk.
sed 's|path = "../../sdk"|path = "../sdk"|' "$ROOT/examples/designer-template/Cargo.toml" \
    > "$stage/designer-template/Cargo.toml"
for d in sdk designer-template examples data; do
    rm -rf "${SHARE:?}/$d"
    mv "$stage/$d" "$SHARE/$d"
done

echo "installed vpt $("$PREFIX/bin/vpt" --version 2>/dev/null | awk '{print $NF}') into $PREFIX:"
echo "  $PREFIX/bin/vpt"
echo "  $SHARE/plugins/ (${PLUGINS[*]/#/lib})"
echo "  $SHARE/sdk/, $SHARE/designer-template/, $SHARE/examples/, $SHARE/data/"
case ":$PATH:" in
    *":$PREFIX/bin:"*) ;;
    *) echo "add $PREFIX/bin to PATH to run \`vpt\` by name" ;;
esac
