/// Where the configuration loaders get the files a configuration refers to (plugin rule files,
/// `pem_file`, `jwks_file`). Core loaders only parse what a source hands them; the runtime's
/// `DiskConfigFiles` reads the disk once and records it into a `ConfigBundle`, and workers load
/// from that bundle alone.
public protocol ConfigFiles {
    /// The bytes of the file at `path`, or nil if it cannot be read.
    func contents(_ path: String) -> [UInt8]?
    /// Names of the regular files (not directories) in `directory`, or nil if it cannot be listed.
    func regularFiles(in directory: String) -> [String]?
}

/// A source with no files: a configuration that refers to one gets "cannot read" issues.
public struct NoConfigFiles: ConfigFiles {
    public init() {}
    public func contents(_ path: String) -> [UInt8]? { nil }
    public func regularFiles(in directory: String) -> [String]? { nil }
}
