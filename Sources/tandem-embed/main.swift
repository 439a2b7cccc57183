// Build tool: writes a Swift file that embeds web files, so that `tandem serve` needs nothing beside
// its binary. Usage: tandem-embed OUTPUT ROUTE=FILE...
import Foundation

let arguments = CommandLine.arguments.dropFirst()
guard let output = arguments.first else {
    FileHandle.standardError.write(Data("usage: tandem-embed OUTPUT ROUTE=FILE...\n".utf8))
    exit(2)
}

/// FNV-1a, 64 bits: an ETag needs to change with the content, not to resist an adversary.
func fnv1a(_ bytes: Data) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash = hash &* 0x100_0000_01b3
    }
    return String(hash, radix: 16)
}

var entries: [String] = []
for pair in arguments.dropFirst() {
    guard let equals = pair.firstIndex(of: "=") else {
        FileHandle.standardError.write(Data("tandem-embed: expected ROUTE=FILE, got \(pair)\n".utf8))
        exit(2)
    }
    let route = String(pair[..<equals])
    let path = String(pair[pair.index(after: equals)...])
    guard let data = FileManager.default.contents(atPath: path) else {
        FileHandle.standardError.write(Data("tandem-embed: cannot read \(path)\n".utf8))
        exit(1)
    }
    entries.append("        (\"\(route)\", \"\(fnv1a(data))\", \"\(data.base64EncodedString())\"),")
}

let source = """
    // Generated at build time by tandem-embed from clients/js; edit those files, not this one.
    let embeddedWebFiles: [(route: String, etag: String, base64: String)] = [
    \(entries.joined(separator: "\n"))
    ]

    """
do {
    try source.write(toFile: output, atomically: true, encoding: .utf8)
} catch {
    FileHandle.standardError.write(Data("tandem-embed: cannot write \(output): \(error)\n".utf8))
    exit(1)
}
