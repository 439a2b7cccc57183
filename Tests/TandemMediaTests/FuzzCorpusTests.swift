import Foundation
import TandemFuzzTargets
import Testing

/// Replays what libFuzzer found (`Tests/Fuzz/run.sh`) through every network parser: inputs that once
/// reached new code, malformed in every way the fuzzer could think of. A trap here is a crash a network
/// peer could cause.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus")

    @Test(arguments: FuzzTarget.allCases)
    func corpusReplaysWithoutACrash(_ target: FuzzTarget) throws {
        let directory = Self.corpus.appendingPathComponent(target.rawValue)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(files.count >= 10, "the \(target) corpus is missing")
        for name in files {
            let data = try Data(contentsOf: directory.appendingPathComponent(name))
            data.withUnsafeBytes { target.run($0) }
        }
    }
}
