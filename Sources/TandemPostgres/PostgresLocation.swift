import Foundation
import NIOSSL
import PostgresNIO

/// Where a PostgreSQL store is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE]`
/// (`postgresql://` too), with libpq's meanings of `sslmode`: `disable`; `prefer` (the default: TLS
/// when the server offers it, unverified); `require` (TLS, unverified); `verify-full` (TLS, the
/// certificate checked against the system's roots, or `sslrootcert=PATH`, and the host name).
public struct PostgresLocation: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, CaseIterable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    public var rootCertificate: String?

    /// Nil, with the reason, when `text` is not such a URL.
    public static func parse(_ text: String) -> Result<PostgresLocation, LocationError> {
        guard text.hasPrefix("postgres://") || text.hasPrefix("postgresql://"), let url = URLComponents(string: text) else {
            return .failure(LocationError("must be postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"))
        }
        guard let host = url.host, !host.isEmpty else { return .failure(LocationError("names no host")) }
        guard let user = url.user, !user.isEmpty else { return .failure(LocationError("names no user")) }
        let database = String(url.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else { return .failure(LocationError("names no database (…/DATABASE)")) }
        let port = url.port ?? 5432
        guard (1...65535).contains(port) else { return .failure(LocationError("has port \(port), not 1 to 65535")) }
        var location = PostgresLocation(
            host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host, port: port,
            user: url.percentEncodedUser?.removingPercentEncoding ?? user,
            password: url.percentEncodedPassword?.removingPercentEncoding, database: database.removingPercentEncoding ?? database,
            tls: .prefer, rootCertificate: nil)
        for item in url.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let mode = item.value.flatMap(TLSMode.init(rawValue:)) else {
                    return .failure(LocationError("sslmode takes \(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))"))
                }
                location.tls = mode
            case "sslrootcert":
                location.rootCertificate = item.value
            default:
                return .failure(LocationError("has an unknown parameter \(item.name) (sslmode and sslrootcert are known)"))
            }
        }
        if location.rootCertificate != nil, location.tls != .verifyFull {
            return .failure(LocationError("sslrootcert needs sslmode=verify-full"))
        }
        return .success(location)
    }

    public struct LocationError: Error, Sendable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// The URL without its password, for logs.
    public var description: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(user)@\(shownHost):\(port)/\(database)" + (tls == .prefer ? "" : "?sslmode=\(tls.rawValue)")
    }

    /// postgres-nio's configuration for this location.
    public func clientConfiguration() throws -> PostgresClient.Configuration {
        let tlsSetting: PostgresClient.Configuration.TLS
        switch tls {
        case .disable:
            tlsSetting = .disable
        case .prefer, .require:
            var unverified = TLSConfiguration.makeClientConfiguration()
            unverified.certificateVerification = .none
            tlsSetting = tls == .prefer ? .prefer(unverified) : .require(unverified)
        case .verifyFull:
            var verified = TLSConfiguration.makeClientConfiguration()
            if let rootCertificate { verified.trustRoots = .file(rootCertificate) }
            tlsSetting = .require(verified)
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tlsSetting)
        configuration.options.connectTimeout = .seconds(5)
        return configuration
    }
}
