import Foundation

/// A file of the browser client or the demo page, embedded in the binary at build time.
public struct WebAsset: Sendable {
    public let route: String
    public let contentType: String
    /// Quoted, as the `ETag` header wants it.
    public let etag: String
    public let body: [UInt8]

    /// Every embedded file, by route (`/`, `/tandem.js`, `/demo.js`, …).
    public static let all: [String: WebAsset] = {
        var assets: [String: WebAsset] = [:]
        for file in embeddedWebFiles {
            guard let data = Data(base64Encoded: file.base64) else { continue }
            assets[file.route] = WebAsset(
                route: file.route, contentType: contentType(of: file.route), etag: "\"\(file.etag)\"", body: Array(data))
        }
        return assets
    }()

    /// Whether the route is part of the demo page (as opposed to the client library).
    public var isDemo: Bool { route != "/tandem.js" }

    static func contentType(of route: String) -> String {
        if route == "/" || route.hasSuffix(".html") { return "text/html; charset=utf-8" }
        if route.hasSuffix(".js") { return "text/javascript; charset=utf-8" }
        if route.hasSuffix(".css") { return "text/css; charset=utf-8" }
        if route.hasSuffix(".svg") { return "image/svg+xml" }
        if route.hasSuffix(".png") { return "image/png" }
        return "application/octet-stream"
    }
}
