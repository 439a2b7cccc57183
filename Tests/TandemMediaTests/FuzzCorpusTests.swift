import Foundation
import TandemFuzzDTLS
import TandemFuzzTargets
import Testing

/// Replays what libFuzzer found (`Tests/Fuzz/run.sh`) through every network parser: inputs that once
/// reached new code, malformed in every way the fuzzer could think of. A trap here is a crash a network
/// peer could cause.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus")

    static let targets = FuzzTarget.allCases.map(\.rawValue) + [DTLSFuzzTarget.name]

    static func run(_ target: String, _ input: UnsafeRawBufferPointer) {
        if let pure = FuzzTarget(rawValue: target) { pure.run(input) } else { DTLSFuzzTarget.run(input) }
    }

    @Test(arguments: targets)
    func corpusReplaysWithoutACrash(_ target: String) throws {
        let directory = Self.corpus.appendingPathComponent(target)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(files.count >= 10, "the \(target) corpus is missing")
        for name in files {
            let data = try Data(contentsOf: directory.appendingPathComponent(name))
            data.withUnsafeBytes { Self.run(target, $0) }
        }
    }
}
