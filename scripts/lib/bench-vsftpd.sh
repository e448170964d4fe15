# Sourced by the bench scripts (after lib/bench-cleanup.sh, with VSFTPD set
# and WORK made): starts their vsftpd.
#
# bench_vsftpd IP PORT [NAME] < extra-lines: writes $WORK/NAME.conf
# (anonymous, read from $WORK/root, chroot helper $WORK/empty, in the
# foreground, the extra lines from stdin appended), starts vsftpd on it in
# the background (log $WORK/NAME.log), adds it to PIDS and sets VSFTPD_PID.
# NAME defaults to vsftpd.
bench_vsftpd() {   # ip port [name]
    local name=${3:-vsftpd}
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
    } >"$WORK/$name.conf"
    chmod 600 "$WORK/$name.conf"
    "$VSFTPD" "$WORK/$name.conf" </dev/null >"$WORK/$name.log" 2>&1 &
    VSFTPD_PID=$!
    PIDS+=("$VSFTPD_PID")
}
