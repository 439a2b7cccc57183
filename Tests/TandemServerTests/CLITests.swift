import Foundation
import Testing

@testable import TandemServer

/// Runs the built `tandem` executable.
func runTandem(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let candidates = [".build/debug/tandem", ".build/release/tandem"].map { root.appendingPathComponent($0).path }
    guard let binary = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw SetupError("tandem is not built; run swift build first")
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("TANDEM_") }.merging(environment) { $1 }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // A command that should have failed but started a server instead is stopped, and the test fails on
    // its status.
    let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + 30, execute: watchdog)
    defer { watchdog.cancel() }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

@Suite("The tandem command")
struct CLITests {
    @Test(arguments: [
        ["serve", "--listen", "nowhere"],
        ["serve", "--secret", "cli-test-secret-16", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key", "--store", "memory"],
        ["serve", "--secret", "cli-test-secret-16"],
        ["serve", "--no-tls", "--secret", "cli-test-secret-16", "--store", "sqlite:/dev/null/sub/x.db"],
        ["serve", "--no-tls", "--secret", "cli-test-secret-16", "--heartbeat-interval=soon"],
        // A PostgreSQL store that nothing answers for (port 1): refused after its wait, in one line.
        ["serve", "--no-tls", "--secret", "cli-test-secret-16", "--store", "postgres://tandem@127.0.0.1:1/tandem?sslmode=disable"],
        ["serve", "--no-tls", "--secret", "cli-test-secret-16", "--store", "postgres://127.0.0.1/tandem"],
        ["serve", "--frobnicate"],
        ["serve", "--listen"],
        // Empty or short secrets and keys, every one of them, also in dev mode.
        ["serve", "--no-tls", "--secret", ""],
        ["serve", "--dev", "--no-tls", "--secret", "fifteen-bytes.."],
        ["serve", "--dev", "--no-tls", "--api-key", ""],
        ["serve", "--dev", "--no-tls", "--turn-listen", "127.0.0.1:0", "--turn-secret", ""],
        ["serve", "--no-tls", "--secret", "cli-test-secret-16", "--sfu-url", "https://x", "--sfu-api-key", "k"],
        ["token", "--session", "s1", "--identity", "ann", "--secret", ""],
        ["daily-standin", "--api-key", "short"],
        ["launch"],
    ])
    func setupMistakesAreOneLineAndNonZero(arguments: [String]) throws {
        let r = try runTandem(arguments)
        #expect(r.status != 0)
        let lines = r.err.split(separator: "\n")
        #expect(lines.count == 1, "\(r.err)")
        #expect(lines.first?.hasPrefix("tandem: ") == true, "\(r.err)")
    }

    @Test func unknownFlagsAreNamed() throws {
        let r = try runTandem(["serve", "--frobnicate"])
        #expect(r.err.contains("--frobnicate"))
        let help = try runTandem(["serve", "--help"])
        #expect(help.status == 0)
        // Every setting of the config file and the environment is a flag too.
        for key in ConfigLoader.keys {
            #expect(help.out.contains("--\(key)"), "serve --help does not list --\(key)")
        }
    }

    /// Settings that take free text (or none) cannot be given a wrong value.
    static let checkedKeys = ConfigLoader.keys.filter {
        !["dev", "no-tls", "secret", "api-key", "data-dir", "node", "ice-servers", "tls-key", "turn-allow-loopback-peers", "no-demo", "metrics-auth"].contains($0)
    }

    /// Each flag reaches its own setting: a value that setting refuses is reported under its name.
    @Test(arguments: checkedKeys)
    func eachFlagSetsItsOwnSetting(key: String) throws {
        let r = try runTandem(["serve", "--no-tls", "--secret", "cli-test-secret-16", "--store", "memory", "--\(key)", "no-such-value"])
        #expect(r.status != 0)
        // The key itself, not a longer key that contains it ("listen" in "turn-listen").
        let named = try Regex("(^|[^a-z-])(--)?\(key)([^a-z-]|$)")
        #expect(r.err.contains(named), "\(r.err)")
    }

    /// `tandem settings` prints what deploy/dev.sh docs writes: the example file and the README's tables.
    @Test func settingsPrintsTheDocs() throws {
        let jsonc = try runTandem(["settings", "--jsonc"])
        #expect(jsonc.status == 0 && jsonc.out == Setting.exampleFile())
        let markdown = try runTandem(["settings", "--markdown"])
        #expect(markdown.status == 0 && markdown.out == Setting.markdown())
        let text = try runTandem(["settings"])
        #expect(text.status == 0 && text.out == Setting.helpText() + "\n")
    }

    @Test func tokenPrintsAVerifiableToken() throws {
        let r = try runTandem(["token", "--session", "s1", "--identity", "ann", "--ttl", "60"], environment: ["TANDEM_SECRET": "cli-secret-0123456789"])
        #expect(r.status == 0)
        let token = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        let claims = try JoinTokens(secret: "cli-secret-0123456789").verify(token, session: "s1", nowSeconds: Int64(Date().timeIntervalSince1970))
        #expect(claims.identity == "ann")
        #expect(try runTandem(["token", "--session", "s1", "--identity", "ann"]).status == 1)  // no secret anywhere
    }

    @Test func certsDevWritesACAAndAServerCertificate() throws {
        let dir = NSTemporaryDirectory() + "tandem-cli-certs-\(UUID().uuidString)"
        let r = try runTandem(["certs", "dev", "--out", dir])
        #expect(r.status == 0)
        for file in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/" + file), "\(file)")
        }
        let keyMode = try FileManager.default.attributesOfItem(atPath: dir + "/server-key.pem")[.posixPermissions] as? Int
        #expect(keyMode == 0o600)
    }
}
