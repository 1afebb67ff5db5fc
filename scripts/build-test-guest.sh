#!/bin/sh
# Build vimkit's tiny test guest for the QEMU backend: a Debian kernel and a busybox initramfs.
#
#   scripts/build-test-guest.sh DIR        -> DIR/vmlinuz, DIR/initramfs.img, DIR/guest.json
#
# Idempotent and cached: the kernel .deb is kept in DIR/cache, and nothing is rebuilt when
# DIR/guest.json names the same kernel version and the same recipe (a hash of this script).
# Needs (Debian): apt-get download, dpkg-deb, depmod (kmod), cpio, busybox-static, gzip.
#
# The guest's init reads from the kernel command line (the QEMU driver sets them from the VIM's
# IPAM and the compute's spec):
#   vimkit.id=<compute id>          echoed in the ready marker and served over HTTP
#   vimkit.net=<mac>,<addr/len>[,<gateway>][;...]   one entry per NIC, matched by MAC
#   vimkit.userdata=<base64>        written to /run/userdata (and served as /userdata)
#   vimkit.cd=1                     a config drive is attached: wait for it
# The config drive (iso9660, label config-2, OpenStack layout) is a read-only virtio disk holding
# openstack/latest/{meta_data.json,user_data,network_data.json}; its user_data wins over the
# command line's. It is mounted on /mnt/config; meta_data.json is served as /meta_data.json.
# The guest prints "VIMKIT-READY <id> <uptime>" on the serial console once networking is up; an
# HTTP responder (busybox httpd) on port 80 then answers "vimkit-guest <id>".
# The second serial port (ttyS1) is the VIM's guest channel: a line "NET <mac> <addr/len> [<gw>]"
# configures the NIC with that MAC (a NIC hot-plugged after boot), answered by "NET-OK <mac> <dev>".
set -eu

dir=${1:?usage: build-test-guest.sh DIR}
mkdir -p "$dir/cache"
dir=$(cd "$dir" && pwd)

# The kernel the metapackage currently points at: the newest one the mirror still serves.
kpkg=${VIMKIT_GUEST_KERNEL_PACKAGE:-$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}
[ -n "$kpkg" ] || { echo "build-test-guest: cannot find the kernel package (apt-get update?)" >&2; exit 1; }
kver=${kpkg#linux-image-}
recipe=$(sha256sum "$0" | cut -c1-16)

if [ -f "$dir/guest.json" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/initramfs.img" ] \
   && grep -q "\"kernel\": \"$kver\"" "$dir/guest.json" && grep -q "\"recipe\": \"$recipe\"" "$dir/guest.json"; then
    echo "build-test-guest: $dir is up to date ($kver)"
    exit 0
fi

for tool in dpkg-deb depmod cpio gzip; do
    command -v "$tool" >/dev/null || { echo "build-test-guest: $tool is missing" >&2; exit 1; }
done
# The initramfs has no libraries: only busybox-static's binary works there.
busybox=
for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then busybox=$candidate; break; fi
done
[ -n "$busybox" ] || { echo "build-test-guest: busybox-static is missing" >&2; exit 1; }

if ! ls "$dir/cache/${kpkg}"_*.deb >/dev/null 2>&1; then
    # apt-get download writes into the current directory and needs it writable by _apt.
    (cd "$dir/cache" && apt-get download "$kpkg")
fi
deb=$(ls "$dir/cache/${kpkg}"_*.deb | head -n1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/kernel"
cp "$work/kernel/boot/vmlinuz-$kver" "$dir/vmlinuz.tmp"

# Debian ships virtio as modules and no modules.dep: compute it, then copy only what the guest
# loads (and what those need) so the initramfs stays around a megabyte.
depmod -b "$work/kernel" "$kver"
root="$work/root"
mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/tmp" \
         "$root/www" "$root/etc" "$root/mnt/config" "$root/lib/modules/$kver"
moddir="$work/kernel/lib/modules/$kver"
wanted="virtio virtio_ring virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev virtio_blk virtio_net net_failover failover virtio_balloon isofs"
: > "$work/load-order"
for mod in $wanted; do
    # modprobe --show-depends prints dependencies first: the order insmod needs.
    modprobe -d "$work/kernel" -S "$kver" --show-depends "$mod" 2>/dev/null | awk '$1 == "insmod" {print $2}' >> "$work/load-order" || true
done
awk '!seen[$0]++' "$work/load-order" > "$work/load-order.uniq"
: > "$root/etc/modules"
while read -r path; do
    rel=${path#"$work/kernel"}
    mkdir -p "$root$(dirname "$rel")"
    case "$path" in
        *.ko.xz) xz -dc "$path" > "$root${rel%.xz}"; rel=${rel%.xz} ;;
        *) cp "$path" "$root$rel" ;;
    esac
    echo "$rel" >> "$root/etc/modules"
done < "$work/load-order.uniq"

cp "$busybox" "$root/bin/busybox"
# busybox lists itself among its applets: linking it would replace the binary with a loop.
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] && continue
    ln -sf busybox "$root/bin/$applet"
done

cat > "$root/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
while read -r mod; do insmod "$mod" 2>/dev/null; done < /etc/modules
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n1; }
id=$(arg vimkit.id)
echo "${id:-unknown}" > /run/id
ud=$(arg vimkit.userdata)
[ -n "$ud" ] && echo "$ud" | base64 -d > /run/userdata 2>/dev/null
ip link set lo up

# The config drive: the virtio disk that mounts as iso9660 with the OpenStack layout.
if [ "$(arg vimkit.cd)" = 1 ]; then
    for i in $(seq 1 50); do
        for disk in /dev/vd?; do
            [ -b "$disk" ] || continue
            mount -t iso9660 -o ro "$disk" /mnt/config 2>/dev/null || continue
            [ -f /mnt/config/openstack/latest/meta_data.json ] && break 2
            umount /mnt/config
        done
        sleep 0.1
    done
    if [ -f /mnt/config/openstack/latest/meta_data.json ]; then
        cp /mnt/config/openstack/latest/meta_data.json /www/meta_data.json
        [ -f /mnt/config/openstack/latest/user_data ] && cp /mnt/config/openstack/latest/user_data /run/userdata
    else
        echo "vimkit: no config drive found"
    fi
fi

# Configure the NIC with MAC $1: address $2, default route via $3 (when there is none yet).
# Devices appear asynchronously after the modules load (or after a hot-plug): wait for it.
configure() {
    mac=$1 addr=$2 gw=$3 dev=
    for i in $(seq 1 100); do
        for path in /sys/class/net/*; do
            [ "$(cat "$path/address" 2>/dev/null)" = "$mac" ] && dev=${path##*/}
        done
        [ -n "$dev" ] && break
        sleep 0.1
    done
    [ -n "$dev" ] || { echo "vimkit: no NIC with MAC $mac"; return 1; }
    ip link set "$dev" up
    [ -n "$addr" ] && ip addr add "$addr" dev "$dev" 2>/dev/null
    [ -n "$gw" ] && ! ip route | grep -q '^default' && ip route add default via "$gw" dev "$dev" 2>/dev/null
    echo "$dev"
}
echo "$(arg vimkit.net)" | tr ';' '\n' | while IFS=, read -r mac addr gw; do
    [ -n "$mac" ] && configure "$mac" "$addr" "$gw" >/dev/null
done

# The guest channel on ttyS1: NIC configuration for NICs added after boot.
(
    stty -F /dev/ttyS1 raw -echo 2>/dev/null
    while true; do
        while read -r cmd mac addr gw; do
            case "$cmd" in
                NET) dev=$(configure "$mac" "$addr" "$gw") && echo "NET-OK $mac $dev" > /dev/ttyS1 ;;
            esac
        done < /dev/ttyS1
        sleep 1
    done
) &
printf 'vimkit-guest %s\n' "$(cat /run/id)" > /www/index.html
[ -f /run/userdata ] && cp /run/userdata /www/userdata
httpd -p 80 -h /www
read -r up _ < /proc/uptime
echo "VIMKIT-READY $(cat /run/id) $up" > /dev/console

# A shell on the serial console for debugging; init must never exit (kernel panic).
while true; do setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1' 2>/dev/null || sleep 5; done
EOF
chmod +x "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$dir/initramfs.img.tmp"
mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
mv "$dir/initramfs.img.tmp" "$dir/initramfs.img"
cat > "$dir/guest.json" <<EOF
{"kernel": "$kver", "recipe": "$recipe", "modules": $(wc -l < "$root/etc/modules"), "marker": "VIMKIT-READY"}
EOF
echo "build-test-guest: built $dir ($kver, initramfs $(du -k "$dir/initramfs.img" | cut -f1) KiB)"
