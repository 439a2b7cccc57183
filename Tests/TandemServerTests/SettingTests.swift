import Foundation
import TandemArbiter
import TandemProtocol
import Testing

@testable import TandemServer

@Suite("Settings are declared once")
struct SettingTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func read(_ path: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    @Test func theREADMETablesAreTheDeclarations() throws {
        let readme = try Self.read("README.md")
        let lines = readme.split(separator: "\n", omittingEmptySubsequences: false)
        let begin = try #require(lines.firstIndex { $0.hasPrefix("<!-- settings:begin") })
        let end = try #require(lines.firstIndex { $0.hasPrefix("<!-- settings:end") })
        let tables = lines[(begin + 1)..<end].joined(separator: "\n") + "\n"
        #expect(tables == Setting.markdown(), "README.md's settings differ from their declarations: run deploy/dev.sh docs")
    }

    @Test func theExampleFileIsTheDeclarations() throws {
        #expect(try Self.read("deploy/tandem.jsonc") == Setting.exampleFile(), "deploy/tandem.jsonc differs from the declarations: run deploy/dev.sh docs")
    }

    /// Every default the declarations state, given in a file, loads to the configuration that giving
    /// nothing loads to: the docs cannot claim a default the server does not have.
    @Test func statedDefaultsAreTheDefaults() throws {
        // Every backend on, so that its settings are read.
        let base = [
            "secret": "settings-test-secret", "no-tls": "true", "store": "memory", "node": "n1",
            "relay-address": "127.0.0.1", "turn-listen": "127.0.0.1:3478", "turn-secret": "settings-test-turn-secret",
            "sfu-url": "https://sfu.invalid/v1", "sfu-api-key": "settings-test-sfu-key",
        ]
        var stated: [String] = []
        for setting in Setting.all where setting.inFile && base[setting.name] == nil {
            if case .value(let json) = setting.byDefault { stated.append("\"\(setting.name)\": \(json)") }
        }
        #expect(stated.count > 40)
        let path = NSTemporaryDirectory() + "tandem-defaults-\(UUID().uuidString).json"
        try Data(("{" + stated.joined(separator: ", ") + "}").utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let plain = try ConfigLoader(flags: base, environment: [:], configFile: nil).load().config
        var withFile = try ConfigLoader(flags: base.merging(["config": path]) { $1 }, environment: [:], configFile: nil).load().config
        // Sets print in an order of their own.
        #expect(withFile.arbiter.enabled == plain.arbiter.enabled)
        withFile.arbiter.enabled = plain.arbiter.enabled
        var loaded = "", defaults = ""
        dump(withFile, to: &loaded)
        dump(plain, to: &defaults)
        #expect(loaded == defaults)
    }

    @Test func declaredDefaultsAreInTheirRanges() throws {
        for setting in Setting.all {
            guard case .value(let json) = setting.byDefault else { continue }
            let value = try JSONParser.parse(Array(json.utf8))
            switch (setting.check, value) {
            case (.integer(let range, _), .number(let n)): #expect(range.contains(Int(n)), "\(setting.name)")
            case (.number(let range, _), .number(let n)): #expect(range.contains(n), "\(setting.name)")
            case (.free, _): break
            default: Issue.record("\(setting.name): default \(json) is not what \(setting.check) takes")
            }
        }
    }

    @Test func namesAreUniqueAndLookLikeFlags() {
        #expect(Set(Setting.all.map(\.name)).count == Setting.all.count)
        for setting in Setting.all {
            #expect(setting.name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "-" }, "\(setting.name)")
            #expect(Setting.named("no-" + setting.name) == nil, "\(setting.name) clashes with a negation")
        }
    }

    @Test(arguments: [
        (["--listen", "1.2.3.4:5"], ["listen": "1.2.3.4:5"]),
        (["--listen=1.2.3.4:5"], ["listen": "1.2.3.4:5"]),
        (["--dev", "--no-tls"], ["dev": "true", "no-tls": "true"]),
        (["--listen", "a:1", "--listen", "b:2"], ["listen": "b:2"]),
        (["--turn-listen", "a:1", "--turn-listen=b:2"], ["turn-listen": "a:1,b:2"]),
        (["--turn-allow-loopback-peers"], ["turn-allow-loopback-peers": "true"]),
        (["--no-turn-allow-loopback-peers"], ["turn-allow-loopback-peers": "false"]),
        (["--node="], ["node": ""]),
    ])
    func commandLinesParse(arguments: [String], expected: [String: String]) throws {
        #expect(try Setting.parse(arguments: arguments) == expected)
    }

    @Test(arguments: [
        (["--frobnicate"], "unknown setting --frobnicate"),
        (["--heartbeat-intervall", "5"], "did you mean --heartbeat-interval?"),
        (["--listen"], "--listen needs a value"),
        (["--listen", "--dev"], "--listen needs a value"),
        (["--dev=yes"], "--dev takes no value"),
        (["--no-dev"], "unknown setting --no-dev"),
        (["--no-turn-allow-loopback-peers=1"], "takes no value"),
        (["serve"], "unexpected argument \"serve\""),
        (["--"], "unexpected argument \"--\""),
    ])
    func commandLineMistakesAreNamed(arguments: [String], message: String) {
        do {
            let parsed = try Setting.parse(arguments: arguments)
            Issue.record("\(arguments) parsed to \(parsed)")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    @Test func environmentNames() {
        #expect(Setting.named("heartbeat-interval")?.environmentName == "TANDEM_HEARTBEAT_INTERVAL")
        #expect(Setting.named("turn-max-streams-per-ip")?.environmentName == "TANDEM_TURN_MAX_STREAMS_PER_IP")
    }
}
