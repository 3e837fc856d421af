/* test-url: every example of the QEMU device URL document, and the other
 * forms netdiskfs accepts, parse to the expected canonical option set;
 * equivalent spellings give identical sets; bad input gives errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opts.h"
#include "table.h"

static int failures;

/* Parse one table line "x URL [OPTS]" and return the canonical set. */
static char *canon(const char *line, char *err, size_t errlen)
{
	struct nd_table t;
	char *ebuf = NULL, *out = NULL;
	size_t elen = 0;
	FILE *errs = open_memstream(&ebuf, &elen);
	int n = nd_table_parse(line, strlen(line), "t.tab", false, NULL, NULL,
			       &t, errs);
	fclose(errs);
	snprintf(err, errlen, "%s", ebuf ? ebuf : "");
	free(ebuf);
	if (n == 0 && t.n == 1)
		out = nd_opts_format(&t.e[0].opts, ",");
	nd_table_free(&t);
	return out;
}

static void expect(const char *line, const char *want)
{
	char err[1024];
	char *got = canon(line, err, sizeof err);
	if (!got || strcmp(got, want) != 0) {
		printf("FAIL: %s\n  want: %s\n  got:  %s %s\n", line, want,
		       got ? got : "(error)", got ? "" : err);
		failures++;
	}
	free(got);
}

static void expect_error(const char *line, const char *fragment)
{
	char err[1024];
	char *got = canon(line, err, sizeof err);
	if (got || !strstr(err, fragment) || strncmp(err, "t.tab:1: ", 9)) {
		printf("FAIL: %s\n  want an error with '%s'\n  got:  %s %s\n",
		       line, fragment, got ? got : "", err);
		failures++;
	}
	free(got);
}

#define FEDORA_ISO                                                            \
	"archives.fedoraproject.org/pub/archive/fedora/linux/releases/20/"    \
	"Live/x86_64/Fedora-Live-Desktop-x86_64-20-1.iso"
#define NBD_CANON                                                             \
	"driver=nbd,export=exp,server.host=192.0.2.1,server.port=30000,"      \
	"server.type=inet"
#define GLUSTER_CANON                                                         \
	"debug=9,driver=gluster,format=qcow2,"                                 \
	"logfile=/var/log/qemu-gluster.log,path=a.img,"                       \
	"server.0.host=1.2.3.4,server.0.port=24007,server.0.type=tcp,"        \
	"server.1.socket=/var/run/glusterd.socket,server.1.type=unix,"        \
	"volume=testvol"

int main(void)
{
	/* iSCSI */
	expect("x iscsi://192.0.2.1/iqn.2001-04.com.example/2",
	       "driver=iscsi,lun=2,portal=192.0.2.1:3260,"
	       "target=iqn.2001-04.com.example,transport=tcp");
	expect("x iscsi://192.0.2.1/iqn.2001-04.com.example/1 "
	       "initiator-name=iqn.2001-04.com.example:my-initiator",
	       "driver=iscsi,initiator-name=iqn.2001-04.com.example:my-"
	       "initiator,lun=1,portal=192.0.2.1:3260,"
	       "target=iqn.2001-04.com.example,transport=tcp");
	expect("x iscsi://user%password@192.0.2.1/iqn.2001-04.com.example/1",
	       "driver=iscsi,lun=1,password=***,portal=192.0.2.1:3260,"
	       "target=iqn.2001-04.com.example,transport=tcp,user=user");
	expect("x iscsi://[::1]:3261/iqn.2026-01.test:disk/0",
	       "driver=iscsi,lun=0,portal=[::1]:3261,"
	       "target=iqn.2026-01.test:disk,transport=tcp");
	expect("x json:{\"driver\":\"iscsi\",\"portal\":\"192.0.2.1\","
	       "\"target\":\"iqn.2001-04.com.example\",\"lun\":2}",
	       "driver=iscsi,lun=2,portal=192.0.2.1:3260,"
	       "target=iqn.2001-04.com.example,transport=tcp");

	/* NBD: the preferred URI, the legacy form and both json shapes are
	 * the same disk. */
	expect("x nbd://192.0.2.1:30000/exp", NBD_CANON);
	expect("x nbd+tcp://192.0.2.1:30000/exp", NBD_CANON);
	expect("x nbd:192.0.2.1:30000:exportname=exp", NBD_CANON);
	expect("x json:{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\","
	       "\"host\":\"192.0.2.1\",\"port\":\"30000\"},\"export\":\"exp\"}",
	       NBD_CANON);
	expect("x json:{\"driver\":\"nbd\",\"host\":\"192.0.2.1\","
	       "\"port\":30000,\"export\":\"exp\"}",
	       NBD_CANON);
	expect("x driver=nbd,server.host=192.0.2.1,server.port=30000,export=exp",
	       NBD_CANON);
	expect("x nbd:192.0.2.1:30000",
	       "driver=nbd,server.host=192.0.2.1,server.port=30000,"
	       "server.type=inet");
	expect("x nbd://192.0.2.1/",
	       "driver=nbd,server.host=192.0.2.1,server.port=10809,"
	       "server.type=inet");
	expect("x nbd://[::1]:10809/x",
	       "driver=nbd,export=x,server.host=::1,server.port=10809,"
	       "server.type=inet");
	expect("x nbd:unix:/tmp/nbd-socket",
	       "driver=nbd,server.path=/tmp/nbd-socket,server.type=unix");
	expect("x nbd:unix:/tmp/nbd-socket:exportname=e",
	       "driver=nbd,export=e,server.path=/tmp/nbd-socket,"
	       "server.type=unix");
	expect("x \"nbd+unix:///e?socket=/tmp/nbd-socket\"",
	       "driver=nbd,export=e,server.path=/tmp/nbd-socket,"
	       "server.type=unix");
	expect("x nbds://alice@127.0.0.1:10810/?tls-psk-file=keys.psk",
	       "driver=nbd,server.host=127.0.0.1,server.port=10810,"
	       "server.type=inet,tls=require,tls-psk-file=keys.psk,"
	       "tls-username=alice");
	expect("x nbds+unix:///?socket=/s",
	       "driver=nbd,server.path=/s,server.type=unix,tls=require");

	/* SSH */
	expect("x ssh://user@host/path/to/disk.img",
	       "driver=ssh,path=/path/to/disk.img,server.host=host,"
	       "server.port=22,user=user");
	expect("x file.driver=ssh,file.user=user,file.host=host,file.port=22,"
	       "file.path=/path/to/disk.img",
	       "driver=ssh,path=/path/to/disk.img,server.host=host,"
	       "server.port=22,user=user");
	expect("x driver=ssh,user=user,host=host,port=22,path=/path/to/disk.img",
	       "driver=ssh,path=/path/to/disk.img,server.host=host,"
	       "server.port=22,user=user");
	expect("x ssh://u@[::1]:2222/d.img?host_key_check=sha256:abcd",
	       "driver=ssh,host-key-check=sha256:abcd,path=/d.img,"
	       "server.host=::1,server.port=2222,user=u");

	/* GlusterFS: URI with file. options, JSON, dotted keys. */
	expect("x gluster://192.0.2.1/testvol/a.img "
	       "file.debug=9,file.logfile=/var/log/qemu-gluster.log",
	       "debug=9,driver=gluster,logfile=/var/log/qemu-gluster.log,"
	       "path=a.img,server.0.host=192.0.2.1,server.0.port=24007,"
	       "server.0.type=tcp,volume=testvol");
	expect("x json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"gluster\","
	       "\"volume\":\"testvol\",\"path\":\"a.img\",\"debug\":9,"
	       "\"logfile\":\"/var/log/qemu-gluster.log\",\"server\":["
	       "{\"type\":\"tcp\",\"host\":\"1.2.3.4\",\"port\":24007},"
	       "{\"type\":\"unix\",\"socket\":\"/var/run/glusterd.socket\"}]}}",
	       GLUSTER_CANON);
	expect("x driver=qcow2,file.driver=gluster,file.volume=testvol,"
	       "file.path=/a.img,file.debug=9,"
	       "file.logfile=/var/log/qemu-gluster.log,"
	       "file.server.0.type=tcp,file.server.0.host=1.2.3.4,"
	       "file.server.0.port=24007,file.server.1.type=unix,"
	       "file.server.1.socket=/var/run/glusterd.socket",
	       GLUSTER_CANON);
	expect("x \"gluster+unix:///testvol/dir/a.img?socket=/run/g.sock\"",
	       "driver=gluster,path=dir/a.img,server.0.socket=/run/g.sock,"
	       "server.0.type=unix,volume=testvol");
	expect("x gluster+rdma://h:24008/v/a.img",
	       "driver=gluster,path=a.img,server.0.host=h,server.0.port=24008,"
	       "server.0.type=rdma,volume=v");

	/* HTTP/HTTPS/FTP/FTPS, including the document's examples. */
	expect("x https://" FEDORA_ISO " ro",
	       "driver=https,ro=on,url=https://" FEDORA_ISO);
	expect("x media=cdrom,file=https://" FEDORA_ISO ",readonly",
	       "driver=https,ro=on,url=https://" FEDORA_ISO);
	expect("x file.driver=http,file.url=http://" FEDORA_ISO " readonly",
	       "driver=http,ro=on,url=http://" FEDORA_ISO);
	expect("x json:{\"file.driver\":\"http\",, \"file.url\":"
	       "\"http://" FEDORA_ISO "\",, \"file.readahead\":\"64k\"}",
	       "driver=http,readahead=64k,url=http://" FEDORA_ISO);
	expect("x json:{\"file.driver\":\"https\", \"file.url\":"
	       "\"https://user:password@vsphere.example.com/folder/test/"
	       "test-flat.vmdk?dcPath=Datacenter&dsName=datastore1\", "
	       "\"file.sslverify\":\"off\", \"file.readahead\":\"64k\", "
	       "\"file.timeout\":10}",
	       "driver=https,password=***,readahead=64k,sslverify=off,"
	       "timeout=10,url=https://vsphere.example.com/folder/test/"
	       "test-flat.vmdk?dcPath=Datacenter&dsName=datastore1,"
	       "username=user");
	expect("x ftp://u:p%40ss@127.0.0.1:2121/d/disk.img",
	       "driver=ftp,password=***,url=ftp://127.0.0.1:2121/d/disk.img,"
	       "username=u");
	expect("x ftps://127.0.0.1/disk.img cookie=a=1;b=2",
	       "cookie=***,driver=ftps,url=ftps://127.0.0.1/disk.img");

	/* Local files and the raw slice. */
	expect("x /var/lib/img.raw", "driver=file,filename=/var/lib/img.raw");
	expect("x file:///var/lib/img%20a.raw",
	       "driver=file,filename=/var/lib/img a.raw");
	expect("x json:{\"driver\":\"raw\",\"offset\":512,\"size\":1024,"
	       "\"file\":{\"driver\":\"file\",\"filename\":\"/i\"}}",
	       "driver=file,filename=/i,offset=512,size=1024");
	expect("x /i readahead=1M,,x", "driver=file,filename=/i,readahead=1M,x");

	/* Errors name the line and the problem. */
	expect_error("x gopher://h/x", "unknown URL scheme 'gopher'");
	expect_error("x nbd+foo://h/x", "unknown URL scheme 'nbd+foo'");
	/* The qcow2 format layer: format=qcow2 whichever way it is asked. */
	expect("x nbd://h/e format=qcow2",
	       "driver=nbd,export=e,format=qcow2,server.host=h,"
	       "server.port=10809,server.type=inet");
	expect("x nbd://h/e format=raw",
	       "driver=nbd,export=e,server.host=h,server.port=10809,"
	       "server.type=inet");
	expect("x json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":"
	       "{\"driver\":\"file\",\"filename\":\"/i\"}}",
	       "backing=off,driver=file,filename=/i,format=qcow2");
	expect_error("x /i format=vmdk", "format=vmdk: not supported");
	expect_error("x json:{\"driver\":\"vmdk\",\"file\":{\"driver\":\"file\","
		     "\"filename\":\"/i\"}}",
		     "format not supported (raw and qcow2 are");
	expect_error("x nbd+unix:///e", "missing ?socket=PATH");
	expect_error("x nbd://h:1/x export=y", "given twice");
	expect_error("x json:{\"driver\":", "json:");
	expect_error("x iscsi://h/iqn.x", "TARGET-IQN/LUN");
	expect_error("x", "has no URL");
	expect_error("a/b /i", "not a valid entry name");
	expect_error("x \"/i", "unterminated double quote");
	expect_error("x ssh://u:pw@h/p", "password in the URL is refused");
	/* %00 would cut the decoded string short: refused, naming the key. */
	expect_error("x nbd://h:1/ab%00cd", "export: %00");
	expect_error("x nbd+unix:///e?socket=/run/s%00x", "socket: %00");
	expect_error("x ssh://h/var/a.img%00.bak", "path: %00");
	expect_error("x ssh://u%00v@h/var/a.img", "user: %00");
	expect_error("x file:///var/a.img%00.bak", "path: %00");
	expect_error("x gluster://h/vol/a.img%00x", "path: %00");

	printf("%s\n", failures ? "test-url: FAILED" : "test-url: ok");
	return failures != 0;
}
