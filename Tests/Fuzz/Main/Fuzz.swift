import Glibc
import TandemFuzzTargets

#if WITH_DTLS
import TandemFuzzDTLS
#endif

/// The targets this binary has, by name: the pure ones, and DTLS's when built with the C libraries.
let targets: [String: @Sendable (UnsafeRawBufferPointer) -> Void] = {
    var all = Dictionary(uniqueKeysWithValues: FuzzTarget.allCases.map { target in (target.rawValue, target.run) })
    #if WITH_DTLS
    all[DTLSFuzzTarget.name] = DTLSFuzzTarget.run
    #endif
    return all
}()

#if FUZZING
// libFuzzer's entry point; the target comes from TANDEM_FUZZ_TARGET (see Tests/Fuzz/run.sh).
let target: @Sendable (UnsafeRawBufferPointer) -> Void = {
    let name = getenv("TANDEM_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = targets[name] else { fatalError("set TANDEM_FUZZ_TARGET to one of \(targets.keys.sorted())") }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#else
/// Without the fuzzer: `tandem-fuzz TARGET FILE…` runs files through a target (to reproduce a crash).
@main struct Replay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = targets[name] else {
            print("usage: tandem-fuzz \(targets.keys.sorted().joined(separator: "|")) FILE…")
            exit(2)
        }
        for path in arguments.dropFirst() {
            guard let file = fopen(path, "rb") else { continue }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while case let n = fread(&chunk, 1, chunk.count, file), n > 0 { bytes += chunk[0..<n] }
            fclose(file)
            bytes.withUnsafeBytes { target($0) }
        }
    }
}
#endif
