/*
 * A QEMU TCG plugin that counts the guest instructions a qemu-user run executes.
 *
 *   qemu-aarch64 -plugin ./libinsn_count.so,out=FILE -cpu cortex-a72 PROGRAM ...
 *
 * Each translation block gets one execution callback that adds the block's instruction count to a
 * shared total with a relaxed atomic add, so guest threads (one vCPU each under qemu-user) do not
 * lose counts; QEMU 7.2's inline counter is one plain non-atomic u64. A block is counted whole when
 * it is entered, so an exception in its middle over-counts by the rest of the block: a constant for
 * the caller's purpose (cross/insn_count.py differences two runs). At exit it writes
 *
 *   insns <total>
 *   vcpus <guest threads seen>
 *
 * to out=FILE (default: stderr through qemu_plugin_outs). Built by cross/insn_count.py against
 * the qemu-plugin.h of the installed QEMU (plugin API version 1, QEMU 7.2).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t insns;
static uint64_t vcpus;
static char *out_path;

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    __atomic_fetch_add(&insns, (uint64_t)(uintptr_t)udata, __ATOMIC_RELAXED);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    __atomic_fetch_add(&vcpus, 1, __ATOMIC_RELAXED);
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    char line[96];
    snprintf(line, sizeof line, "insns %" PRIu64 "\nvcpus %" PRIu64 "\n",
             __atomic_load_n(&insns, __ATOMIC_RELAXED), __atomic_load_n(&vcpus, __ATOMIC_RELAXED));
    if (out_path) {
        FILE *f = fopen(out_path, "w");
        if (f) {
            fputs(line, f);
            fclose(f);
            return;
        }
    }
    qemu_plugin_outs(line);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(argv[i] + 4);
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (only out=FILE)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
