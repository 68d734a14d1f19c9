#!/usr/bin/env bash
# make fuzz: builds one libFuzzer binary (every target; FUZZ_TARGET picks one at run time) and
# fuzzes each target for FUZZ_SECONDS under `nice -n 19`, growing Tests/Fuzz/corpus/<target>/.
#
#   FUZZ_SECONDS=600 scripts/fuzz.sh                 # every target, 10 minutes each
#   FUZZ_TARGETS="jws router" FUZZ_SECONDS=60 scripts/fuzz.sh
#   scripts/fuzz.sh --build-only
#
# The library sources (PortcullisCore, PortcullisPlugins, RequestDecoder.swift) are compiled
# with -sanitize=fuzzer,address so libFuzzer sees their coverage; swift-crypto is linked from
# the debug build (`swift build` first builds it). A crash leaves crash-<sha1> in
# .build/fuzz/artifacts/<target>/; fix it and copy the input into the target's corpus as a
# regression input. Leak detection is off by default (FUZZ_DETECT_LEAKS=1 turns it on):
# LeakSanitizer cannot follow Swift enum payload pointers that carry tag bits, and reports the
# rule sets built once per process as leaked; growth per input is still caught by
# -rss_limit_mb. Summary lines (target, seconds, executions, crashes) go to stdout and to
# .build/fuzz/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH

ALL_TARGETS="jws jwks config rules pointer_template transform fastcgi_params router"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
SECONDS_EACH=${FUZZ_SECONDS:-60}
OUT=.build/fuzz
BIN=$OUT/portcullis-fuzz

build() {
    swift build >/dev/null
    local dbg checkouts
    dbg=$(swift build --show-bin-path)
    checkouts=.build/checkouts/swift-crypto/Sources
    mkdir -p "$OUT/modules"
    local cflags=(-sanitize=fuzzer,address -parse-as-library -swift-version 6 -O -g -wmo
        -Xcc -fmodule-map-file=Sources/CJansson/module.modulemap
        -I "$OUT/modules" -I "$dbg/Modules")
    for c in CXKCPShims CXKCP CCryptoBoringSSLShims CCryptoBoringSSL; do
        cflags+=(-Xcc "-fmodule-map-file=$checkouts/$c/include/module.modulemap" -Xcc -I -Xcc "$checkouts/$c/include")
    done
    local module
    for module in PortcullisCore PortcullisPlugins; do
        # Rebuilt only when a source is newer than the object (the compile takes minutes).
        # (Sources listed after the object was started count as newer: the object is removed first.)
        if [[ -f "$OUT/$module.o" && -z "$(find Sources/$module -name '*.swift' -newer "$OUT/$module.o")" && ! ( $module == PortcullisPlugins && "$OUT/PortcullisCore.o" -nt "$OUT/$module.o" ) ]]; then
            continue
        fi
        echo "fuzz: compiling $module (instrumented)"
        rm -f "$OUT/$module.o"
        swiftc "${cflags[@]}" -module-name "$module" -emit-module -emit-module-path "$OUT/modules/$module.swiftmodule" \
            -c -o "$OUT/$module.o" $(find "Sources/$module" -name '*.swift' | sort)
    done
    echo "fuzz: linking $BIN"
    local deps=()
    for d in Crypto _CryptoExtras CryptoExtras CryptoBoringWrapper SwiftASN1 CCryptoBoringSSL CCryptoBoringSSLShims CXKCP CXKCPShims; do
        [[ -d "$dbg/$d.build" ]] && while IFS= read -r o; do deps+=("$o"); done < <(find "$dbg/$d.build" -name '*.o')
    done
    rm -f "$BIN"
    swiftc "${cflags[@]}" -D FUZZ_BUILD -module-name PortcullisFuzz -o "$BIN" \
        Tests/Fuzz/main.swift Tests/Fuzz/FastCGIParamStub.swift Tests/PortcullisCoreTests/Fuzz/FuzzTargets.swift \
        Sources/PortcullisRuntime/Gateway/RequestDecoder.swift \
        "$OUT/PortcullisCore.o" "$OUT/PortcullisPlugins.o" "${deps[@]}" -ljansson -lstdc++ 2>&1 | grep -v "Cannot export local symbol" || true
    # swiftc leaves the harness's module for the debugger in the working directory.
    rm -f PortcullisFuzz-*.swiftmodule PortcullisFuzz-*.swiftdoc PortcullisFuzz-*.swiftsourceinfo
    [[ -x "$BIN" ]]
}

build
[[ "${1:-}" == "--build-only" ]] && exit 0

: > "$OUT/summary.txt"
for target in $TARGETS; do
    corpus=Tests/Fuzz/corpus/$target
    artifacts=$OUT/artifacts/$target/
    mkdir -p "$corpus" "$artifacts" "$OUT/work/$target"
    log=$OUT/$target.log
    echo "fuzz: $target for ${SECONDS_EACH}s"
    set +e
    # New inputs go to a work directory; -merge below keeps only those that add coverage.
    FUZZ_TARGET=$target nice -n 19 "$BIN" "$OUT/work/$target" "$corpus" -max_total_time="$SECONDS_EACH" \
        -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -detect_leaks="${FUZZ_DETECT_LEAKS:-0}" \
        -artifact_prefix="$artifacts" >"$log" 2>&1
    status=$?
    set -e
    FUZZ_TARGET=$target nice -n 19 "$BIN" -merge=1 "$corpus" "$OUT/work/$target" >>"$log" 2>&1 || true
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    crashes=$(find "$artifacts" -type f | wc -l)
    line="$target seconds=$SECONDS_EACH executions=${execs:-?} exit=$status crash_files=$crashes corpus=$(ls "$corpus" | wc -l)"
    echo "$line" | tee -a "$OUT/summary.txt"
done
