// The old platform's guest tools as Windows services: a profile names tools
// the way the Linux side does ('vmware-tools', 'hyperv-daemons' …); on
// Windows each is a handful of services and drivers, disabled (Start=4) on
// the new hardware where they would only fail or spin.
export const WINDOWS_TOOL_SERVICES: Record<string, string[]> = {
  'vmware-tools': ['VMTools', 'vmtoolsd', 'VMUpgradeHelper', 'VMware Physical Disk Helper Service', 'vmvss', 'VGAuthService',
    'vm3dservice', 'VMwareCAFManagementAgentHost', 'VMwareCAFCommAmqpListener', 'vmhgfs', 'vmmemctl', 'vmmouse', 'vmrawdsk', 'vmusbmouse', 'vsock'],
  // open-vm-tools is the Linux build; on Windows the same services come from VMware Tools (above)
  'open-vm-tools': [],
  'hyperv-daemons': ['vmicheartbeat', 'vmickvpexchange', 'vmicshutdown', 'vmictimesync', 'vmicvss', 'vmicguestinterface', 'vmicrdv', 'vmicvmsession'],
  'qemu-guest-agent': ['QEMU-GA', 'QEMU Guest Agent VSS Provider'],
  'virtualbox-guest-additions': ['VBoxService', 'VBoxGuest', 'VBoxMouse', 'VBoxSF', 'VBoxVideo', 'VBoxWddm'],
};

/** the services of the guest (case-insensitively) that belong to the named tools, with the tools' name */
export function toolServices(tools: string[], services: { name: string; start: number }[]): { service: string; start: number; tool: string }[] {
  const out: { service: string; start: number; tool: string }[] = [];
  const seen = new Set<string>();
  for (const tool of tools) {
    for (const name of WINDOWS_TOOL_SERVICES[tool] ?? []) {
      const s = services.find(x => x.name.toLowerCase() === name.toLowerCase());
      if (!s || seen.has(s.name.toLowerCase())) continue;
      seen.add(s.name.toLowerCase());
      out.push({ service: s.name, start: s.start, tool });
    }
  }
  return out;
}
