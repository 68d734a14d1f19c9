// libFuzzer entry point for `scripts/fuzz.sh` (built with -sanitize=fuzzer,address around the
// library sources and Tests/PortcullisCoreTests/Fuzz/FuzzTargets.swift). FUZZ_TARGET names
// the target; the corpus directory is passed to libFuzzer on the command line.
#if canImport(Glibc)
import Glibc
#endif

private let target: @Sendable ([UInt8]) -> Void = {
    guard let name = getenv("FUZZ_TARGET").map({ String(cString: $0) }), let target = FuzzTargets.all[name] else {
        print("FUZZ_TARGET must be one of: \(FuzzTargets.all.keys.sorted().joined(separator: ", "))")
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target(size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
