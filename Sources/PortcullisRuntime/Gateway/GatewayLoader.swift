import Foundation
import PortcullisCore
import PortcullisPlugins

/// A configuration with everything it refers to loaded and validated: what `check` and
/// `reload` validate and what a worker serves.
public struct LoadedGateway: Sendable {
    public let configPath: String
    public let config: GatewayConfig
    public let plugins: PluginSet
    /// Transformation chains, indexed like `config.routes`.
    public let chains: [TransformChain]
    /// The bytes everything above was built from.
    public let bundle: ConfigBundle
}

public enum GatewayLoader {
    /// Reads the config file and every file it refers to from disk, once, and validates them
    /// as a whole; throws every issue found. The result's `bundle` is what workers then run.
    public static func load(configPath: String) throws(ConfigErrors) -> LoadedGateway {
        let disk = try DiskConfigFiles(configPath: configPath)
        let loaded = try load(configPath: configPath, bytes: disk.bundle.configBytes, files: disk)
        return LoadedGateway(configPath: configPath, config: loaded.config, plugins: loaded.plugins, chains: loaded.chains,
                             bundle: disk.bundle)
    }

    /// Loads a generation's bundle without touching the disk.
    public static func load(bundle: ConfigBundle) throws(ConfigErrors) -> LoadedGateway {
        let loaded = try load(configPath: bundle.configPath, bytes: bundle.configBytes, files: bundle)
        return LoadedGateway(configPath: bundle.configPath, config: loaded.config, plugins: loaded.plugins, chains: loaded.chains,
                             bundle: bundle)
    }

    /// Reads a bundle file the master wrote.
    public static func readBundle(_ path: String) throws(ConfigErrors) -> ConfigBundle {
        guard let data = FileManager.default.contents(atPath: path), let bundle = ConfigBundle.decode(Array(data)) else {
            throw ConfigErrors([ConfigIssue(file: path, pointer: "", message: "cannot read the configuration bundle")])
        }
        return bundle
    }

    /// Relative paths inside `bytes` and error messages refer to `configPath`; files it refers
    /// to come from `files`.
    private static func load(configPath: String, bytes: [UInt8], files: any ConfigFiles)
        throws(ConfigErrors) -> (config: GatewayConfig, plugins: PluginSet, chains: [TransformChain]) {
        // Every kind of issue is collected before throwing: config, rule files, route references.
        let (config, configIssues) = try ConfigLoader.parseReportingAll(bytes: bytes, file: configPath, files: files)
        var issues = configIssues
        var plugins = PluginSet.empty
        var declared = Set<String>()
        if let directory = config.pluginsDirectory {
            let loaded = PluginSet.loadReportingAll(directory: directory, files: files, defaultMaxBodyBytes: config.transform.maxBodyBytes)
            (plugins, declared) = (loaded.set, loaded.declaredNames)
            issues += loaded.issues
        }
        issues += PluginSet.validate(routeReferences: config.routes, declared: declared, configFile: configPath)
        if !issues.isEmpty { throw ConfigErrors(issues) }
        let chains: [TransformChain]
        do {
            chains = try plugins.chains(for: config.routes)
        } catch {
            throw ConfigErrors([ConfigIssue(file: configPath, pointer: "/routes", message: error.description)])
        }
        return (config, plugins, chains)
    }
}
