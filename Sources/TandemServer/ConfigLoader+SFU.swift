import TandemArbiter
import TandemDailyStandIn
import TandemSFU

extension ConfigLoader {
    static let sfuKeys = SettingSection.sfu.settings.map(\.name)

    /// The SFU service: `sfu-url` and `sfu-api-key` for a Daily-style API, or (with `--dev`) `sfu-standin
    /// HOST:PORT` to run a local stand-in of it; nil when neither is given.
    func sfuSettings(dev: Bool, notes: inout [String]) throws -> SFUSettings? {
        var settings: SFUSettings
        if let standIn = text("sfu-standin") {
            guard dev else { throw SetupError("sfu-standin is for development: it needs --dev") }
            guard text("sfu-url") == nil else { throw SetupError("give sfu-url or sfu-standin, not both") }
            let (host, port) = try Self.parseListen(standIn, key: "sfu-standin")
            guard port != 0 else { throw SetupError("sfu-standin needs a port other than 0") }
            let key = try secretSetting("sfu-api-key") ?? Self.randomSecret()
            let api = DailyStandIn.address(host: host, port: port) + "/v1"
            settings = SFUSettings(api: DailyConfiguration(baseURL: api, apiKey: key))
            settings.standIn = SFUSettings.StandInAddress(host: host, port: port)
            notes.append("a stand-in of the Daily REST API runs at \(api) (API key \(key))")
        } else if let url = text("sfu-url") {
            guard url.hasPrefix("https://") || url.hasPrefix("http://") else { throw SetupError("sfu-url must be an http(s) URL, not \"\(url)\"") }
            guard let key = try secretSetting("sfu-api-key") else { throw SetupError("sfu-url needs sfu-api-key (or TANDEM_SFU_API_KEY)") }
            settings = SFUSettings(api: DailyConfiguration(baseURL: url, apiKey: key))
        } else {
            if let stray = Self.sfuKeys.first(where: { text($0) != nil }) { throw SetupError("\(stray) needs sfu-url") }
            return nil
        }
        if let v = try integer("sfu-room-ttl") { settings.roomTTL = .seconds(v) }
        if let v = try milliseconds("sfu-timeout") { settings.api.requestTimeout = v }
        if let v = try number("sfu-rate-limit") { settings.api.requestsPerSecond = v }
        if let v = try number("sfu-delete-rate-limit") { settings.api.deletesPerSecond = v }
        return settings
    }

    /// `sfu-prepare` and `sfu-retry-after`: the arbiter's side of the SFU.
    func sfuPolicy(_ arbiter: inout ArbiterConfig) throws {
        if let t = text("sfu-prepare") {
            guard let policy = SFUPreparation(rawValue: t) else {
                throw SetupError("sfu-prepare takes \(SFUPreparation.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(t)\"")
            }
            arbiter.sfuPreparation = policy
        }
        if let v = try milliseconds("sfu-retry-after") { arbiter.sfuRetryAfter = v }
    }
}
