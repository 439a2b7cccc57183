import Foundation
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol
import TandemSFU
import Testing

@testable import TandemServer

@Suite("Configuration")
struct ConfigTests {
    func load(_ flags: [String: String], env: [String: String] = [:], file: String? = nil) throws -> ServerConfig {
        var path: String?
        if let file {
            path = NSTemporaryDirectory() + "tandem-config-\(UUID().uuidString).jsonc"
            _ = FileManager.default.createFile(atPath: path!, contents: Data(file.utf8))
        }
        return try ConfigLoader(flags: flags, environment: env, configFile: path).load().config
    }

    @Test func theDemoPageIsOnUnlessTurnedOff() throws {
        let base = ["no-tls": "true", "secret": "config-test-secret"]
        #expect(try load(base).serveDemo)
        #expect(try !load(base.merging(["no-demo": "true"]) { $1 }).serveDemo)
        #expect(try !load(base, env: ["TANDEM_NO_DEMO": "true"]).serveDemo)
        #expect(try !load(base, file: #"{"no-demo": true}"#).serveDemo)
    }

    @Test func theSFUIsEnabledByItsService() throws {
        let base = ["no-tls": "true", "secret": "config-test-secret"]
        let off = try load(base)
        #expect(off.sfu == nil && !off.arbiter.enabled.contains(.sfu))
        #expect(throws: SetupError.self) { try load(base.merging(["providers": "p2p,sfu"]) { $1 }) }

        let on = try load(
            base, env: ["TANDEM_SFU_API_KEY": "daily-key-0123456789"],
            file: #"{"sfu-url": "https://api.daily.co/v1/", "sfu-prepare": "session-start", "sfu-room-ttl": 7200, "sfu-timeout": 2500, "sfu-rate-limit": 10, "sfu-delete-rate-limit": 1, "sfu-retry-after": 5000}"#)
        #expect(on.sfu?.api.baseURL == "https://api.daily.co/v1" && on.sfu?.api.apiKey == "daily-key-0123456789")
        #expect(on.sfu?.roomTTL == .seconds(7200) && on.sfu?.api.requestTimeout == .milliseconds(2500) && on.sfu?.api.requestsPerSecond == 10)
        #expect(on.sfu?.api.deletesPerSecond == 1 && on.sfu?.standIn == nil)
        #expect(on.arbiter.enabled.contains(.sfu) && on.arbiter.sfuPreparation == .sessionStart && on.arbiter.sfuRetryAfter == .seconds(5))

        let dev = try load(["dev": "true", "data-dir": NSTemporaryDirectory() + "tandem-\(UUID().uuidString)", "sfu-standin": "127.0.0.1:8444"])
        #expect(dev.sfu?.standIn == SFUSettings.StandInAddress(host: "127.0.0.1", port: 8444))
        #expect(dev.sfu?.api.baseURL == "http://127.0.0.1:8444/v1" && dev.arbiter.enabled.contains(.sfu))

        for bad in [["sfu-url": "https://api.daily.co/v1"], ["sfu-url": "ftp://x", "sfu-api-key": "daily-key-0123456789"], ["sfu-api-key": "daily-key-0123456789"],
                    ["sfu-standin": "127.0.0.1:8444"], ["sfu-url": "https://x", "sfu-api-key": "daily-key-0123456789", "sfu-prepare": "sometimes"],
                    ["sfu-url": "https://x", "sfu-api-key": "daily-key-0123456789", "sfu-room-ttl": "5"]] {
            #expect(throws: SetupError.self, "\(bad)") { try load(base.merging(bad) { $1 }) }
        }
    }

    @Test func theRelayIsEnabledByItsAddresses() throws {
        let base = ["no-tls": "true", "secret": "config-test-secret"]
        let off = try load(base)
        #expect(off.relay == nil)
        #expect(off.arbiter.enabled == [.p2p])
        #expect(throws: SetupError.self) { try load(base.merging(["providers": "p2p,relay"]) { $1 }) }
        #expect(throws: SetupError.self) { try load(base.merging(["relay-threads": "2"]) { $1 }) }

        let on = try load(base, file: #"{"relay-address": ["10.0.0.5", "2001:db8::5"], "relay-threads": 3, "relay-ports": "40000-40100", "relay-announced-ip": ["203.0.113.7"], "relay-stun-server": "198.51.100.3:3478"}"#)
        #expect(on.relay?.addresses == ["10.0.0.5", "2001:db8::5"])
        #expect(on.relay?.threads == 3)
        #expect(on.relay?.ports == 40000...40100)
        #expect(on.relay?.announced == ["203.0.113.7"])
        #expect(on.relay?.stunServer?.host == "198.51.100.3" && on.relay?.stunServer?.port == 3478)
        #expect(on.arbiter.enabled == [.p2p, .relay])

        let dev = try load(["dev": "true", "data-dir": NSTemporaryDirectory() + "tandem-relay-\(UUID().uuidString)"])
        #expect(dev.relay?.addresses == ["127.0.0.1"])

        for bad in [["relay-address": "nope"], ["relay-address": "0.0.0.0"], ["relay-address": "::"], ["relay-address": "10.0.0.5", "relay-ports": "9-1"],
                    ["relay-address": "10.0.0.5", "relay-announced-ip": "1.2.3.4,5.6.7.8"], ["relay-address": "10.0.0.5", "relay-dtls-cert": "/c.pem"],
                    ["relay-address": "10.0.0.5", "relay-stun-server": "stun.example.com:3478"]] {
            #expect(throws: SetupError.self, "\(bad)") { try load(base.merging(bad) { $1 }) }
        }
    }

    @Test func precedenceIsFlagThenEnvironmentThenFile() throws {
        let file = """
            // comment lines are allowed
            {"heartbeat-interval": 1000, "heartbeat-timeout": 9000, "max-participants": 4, "secret": "file-secret-0123456789", "no-tls": true}
            """
        let c = try load(["heartbeat-interval": "2000"], env: ["TANDEM_HEARTBEAT_INTERVAL": "3000", "TANDEM_MAX_PARTICIPANTS": "5"], file: file)
        #expect(c.heartbeatInterval == .milliseconds(2000))
        #expect(c.heartbeatTimeout == .milliseconds(9000))
        #expect(c.arbiter.maxParticipants == 5)
        #expect(c.secret == "file-secret-0123456789")
        #expect(c.tls == .disabled)
        #expect(c.host == "0.0.0.0" && c.port == 8443)
    }

    @Test func devDefaults() throws {
        let dir = NSTemporaryDirectory() + "tandem-dev-\(UUID().uuidString)"
        let c = try load(["dev": "true", "data-dir": dir])
        #expect(c.host == "127.0.0.1" && c.port == 8443)
        #expect(c.store == .sqlite(path: dir + "/tandem.db"))
        #expect(c.secret != nil && c.apiKey != nil)
        #expect(c.tls == .files(certificate: dir + "/certs/server.pem", key: dir + "/certs/server-key.pem"))
        #expect(FileManager.default.fileExists(atPath: dir + "/certs/ca.pem"))
    }

    @Test func listenAddresses() throws {
        #expect(try ConfigLoader.parseListen("[::1]:9000") == ("::1", 9000))
        #expect(try ConfigLoader.parseListen("localhost:0") == ("localhost", 0))
        for bad in ["foo", ":80", "h:99999", "[::1]9000", "h:x"] {
            #expect(throws: SetupError.self, "\(bad)") { try ConfigLoader.parseListen(bad) }
        }
    }

    @Test(arguments: [
        (["no-tls": "true"], "give --secret"),
        (["secret": "config-test-secret"], "give --tls-cert and --tls-key, or --no-tls"),
        (["secret": "config-test-secret", "tls-cert": "c"], "--tls-cert and --tls-key go together"),
        (["secret": "config-test-secret", "no-tls": "true", "heartbeat-interval": "soon"], "heartbeat-interval must be a whole number"),
        (["secret": "config-test-secret", "no-tls": "true", "store": "redis"], "store must be memory, sqlite:PATH or postgres://"),
        (["secret": "config-test-secret", "no-tls": "true", "providers": "relay"], "provider relay cannot be enabled"),
        (["secret": "config-test-secret", "no-tls": "true", "heartbeat-interval": "20000", "heartbeat-timeout": "10000"], "heartbeat-timeout must be longer"),
        (["secret": "config-test-secret", "no-tls": "maybe"], "no-tls must be true or false"),
        (["secret": "config-test-secret", "no-tls": "true", "store": "postgres://u@127.0.0.1/d"], "give --cluster-secret"),
        (["secret": "config-test-secret", "no-tls": "true", "cluster-secret": "short"], "cluster-secret must be at least 16 bytes"),
        (["secret": "config-test-secret", "no-tls": "true", "advertise": "nowhere"], "advertise must be HOST:PORT"),
    ])
    func mistakesAreSaidInOneLine(flags: [String: String], message: String) {
        do {
            _ = try load(flags)
            Issue.record("accepted \(flags)")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
            #expect(!"\(error)".contains("\n"))
        }
    }

    /// Every secret and key: refused empty or under 16 bytes, from a flag, the environment or the file,
    /// with one line that names it; 16 bytes are enough.
    @Test(arguments: ["secret", "api-key", "turn-secret", "sfu-api-key"])
    func shortSecretsAreRefused(key: String) throws {
        var base = ["no-tls": "true", "secret": "config-test-secret", "store": "memory"]
        if key == "turn-secret" { base["turn-listen"] = "127.0.0.1:3478" }
        if key == "sfu-api-key" { base["sfu-url"] = "https://api.daily.co/v1" }
        let env = "TANDEM_" + key.uppercased().replacingOccurrences(of: "-", with: "_")
        for value in ["", "x", "fifteen-bytes.."] {
            for source in ["flag", "environment", "file"] {
                let flags = source == "flag" ? base.merging([key: value]) { $1 } : base.filter { $0.key != key }
                let environment = source == "environment" ? [env: value] : [:]
                let file = source == "file" ? #"{"\#(key)": "\#(value)"}"# : nil
                let error = #expect(throws: SetupError.self, "\(key) = \"\(value)\" from the \(source)") {
                    try load(flags, env: environment, file: file)
                }
                #expect(error?.message.contains("\(key) must be at least 16 bytes") == true, "\(String(describing: error))")
            }
        }
        #expect(throws: Never.self) { try load(base.merging([key: "sixteen-bytes..."]) { $1 }) }
    }

    @Test func fileMistakes() {
        #expect(throws: SetupError.self) { try load([:], file: "{not json") }
        #expect(throws: SetupError.self) { try load([:], file: #"{"heartbeat-intervall": 5}"#) }
        #expect(throws: SetupError.self) { try ConfigLoader(flags: ["config": "/nonexistent.json"], environment: [:], configFile: nil) }
    }

    @Test func iceServersFromTheFile() throws {
        let c = try load(
            ["secret": "config-test-secret", "no-tls": "true"],
            file: #"{"ice-servers": [{"urls": ["stun:127.0.0.1:3478"]}, {"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "c"}]}"#)
        #expect(c.iceServers == [ICEServer(urls: ["stun:127.0.0.1:3478"]), ICEServer(urls: ["turn:127.0.0.1:3478"], username: "u", credential: "c")])
    }

    @Test func theExampleConfigFileLoads() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../deploy/tandem.jsonc").path
        let loader = try ConfigLoader(flags: ["config": example, "secret": "config-test-secret", "no-tls": "true"], environment: [:], configFile: nil)
        let c = try loader.load().config
        // The example states the defaults, and says so: any value it gives must be the default.
        let defaults = ServerConfig()
        #expect(c.arbiter == defaults.arbiter)
        #expect(c.host == defaults.host && c.port == defaults.port)
        #expect(c.serveDemo == defaults.serveDemo)
        #expect(c.rateLimitPerSecond == defaults.rateLimitPerSecond && c.rateLimitBurst == defaults.rateLimitBurst)
        #expect(c.maxCandidatesPerEpoch == defaults.maxCandidatesPerEpoch && c.joinTimeout == defaults.joinTimeout)
        #expect(c.iceServers == defaults.iceServers)
    }
}
