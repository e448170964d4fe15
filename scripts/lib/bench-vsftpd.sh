# Sourced by the bench scripts (after lib/bench-cleanup.sh, with VSFTPD set
# and WORK made): starts their vsftpd.
#
# bench_vsftpd IP PORT < extra-lines: writes $WORK/vsftpd.conf (anonymous,
# read from $WORK/root, chroot helper $WORK/empty, in the foreground, the
# extra lines from stdin appended), starts vsftpd on it in the background
# (log $WORK/vsftpd.log), adds it to PIDS and sets VSFTPD_PID.
bench_vsftpd() {   # ip port
    {
        cat <<EOF
listen=YES
listen_ipv6=NO
listen_address=$1
listen_port=$2
background=NO
anonymous_enable=YES
local_enable=NO
anon_root=$WORK/root
secure_chroot_dir=$WORK/empty
# Off for benchmarks only (the header of bench-throughput.sh says why).
isolate=NO
isolate_network=NO
seccomp_sandbox=NO
EOF
        cat
    } >"$WORK/vsftpd.conf"
    chmod 600 "$WORK/vsftpd.conf"
    "$VSFTPD" "$WORK/vsftpd.conf" </dev/null >"$WORK/vsftpd.log" 2>&1 &
    VSFTPD_PID=$!
    PIDS+=("$VSFTPD_PID")
}
