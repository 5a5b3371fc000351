#!/usr/bin/env bash
# Push the MobileSeg demo, the Paddle Lite library, a converted model and an image to an Android
# phone with adb, run the demo there and pull the mask and overlay PNGs back.
#
#   deploy/lite/android/run_with_adb.sh \
#       --demo build/android-arm64/mobileseg_lite_demo \
#       --lite_lib <inference_lite_lib...>/cxx/lib/libpaddle_light_api_shared.so \
#       --model_dir output/lite_mobilenetv2 --image street.jpg \
#       [--cxx_shared <NDK>/.../aarch64-linux-android/libc++_shared.so] [--out_dir phone_out] \
#       [--serial DEVICE] [-- <demo flags: --threads 1 --power_mode high --repeats 50 ...>]
#
# --cxx_shared is needed when the demo and Lite were built with ANDROID_STL=c++_shared (the
# default of the README's commands); without it the script looks under $ANDROID_NDK.
# Exit code: the demo's (0 ok, 1 bad input); 2 for a problem of this script's arguments or adb.
set -euo pipefail

REMOTE=/data/local/tmp/mobileseg
die() { echo "error: $*" >&2; exit 2; }

demo="" lite_lib="" model_dir="" image="" cxx_shared="" out_dir="phone_out" serial=""
demo_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --demo) demo="${2:-}"; shift 2 ;;
        --lite_lib) lite_lib="${2:-}"; shift 2 ;;
        --model_dir) model_dir="${2:-}"; shift 2 ;;
        --image) image="${2:-}"; shift 2 ;;
        --cxx_shared) cxx_shared="${2:-}"; shift 2 ;;
        --out_dir) out_dir="${2:-}"; shift 2 ;;
        --serial) serial="${2:-}"; shift 2 ;;
        --) shift; demo_args=("$@"); break ;;
        *) die "unknown argument '$1' (see the header of $0)" ;;
    esac
done

[[ -n "$demo" && -f "$demo" ]] || die "--demo '$demo': no such file (build deploy/lite/android first)"
[[ -n "$lite_lib" && -f "$lite_lib" ]] || die "--lite_lib '$lite_lib': no such file (libpaddle_light_api_shared.so of Paddle Lite v2.13-rc)"
[[ -n "$model_dir" && -f "$model_dir/manifest.json" ]] || die "--model_dir '$model_dir': no manifest.json (convert with 'mobileseg lite')"
[[ -f "$model_dir/model_arm.nb" ]] || die "--model_dir '$model_dir': no model_arm.nb (convert with --valid_targets arm)"
[[ -n "$image" && -f "$image" ]] || die "--image '$image': no such file"
if [[ -z "$cxx_shared" && -n "${ANDROID_NDK:-}" ]]; then
    case "$(file -b "$demo" 2>/dev/null)" in
        *ARM\ aarch64*|*aarch64*) triple=aarch64-linux-android ;;
        *) triple=arm-linux-androideabi ;;
    esac
    cxx_shared="$(ls "$ANDROID_NDK"/toolchains/llvm/prebuilt/*/sysroot/usr/lib/$triple/libc++_shared.so 2>/dev/null | head -n 1 || true)"
fi
[[ -z "$cxx_shared" || -f "$cxx_shared" ]] || die "--cxx_shared '$cxx_shared': no such file"

command -v adb >/dev/null || die "adb not found (Android SDK platform-tools)"
adb_cmd=(adb)
[[ -n "$serial" ]] && adb_cmd+=(-s "$serial")
[[ "$("${adb_cmd[@]}" get-state 2>/dev/null)" == "device" ]] || die "no Android device ready (adb devices)"

image_name="$(basename "$image")"
"${adb_cmd[@]}" shell "rm -rf $REMOTE && mkdir -p $REMOTE/model $REMOTE/out" >/dev/null
"${adb_cmd[@]}" push "$demo" "$REMOTE/mobileseg_lite_demo" >/dev/null
"${adb_cmd[@]}" push "$lite_lib" "$REMOTE/libpaddle_light_api_shared.so" >/dev/null
[[ -n "$cxx_shared" ]] && "${adb_cmd[@]}" push "$cxx_shared" "$REMOTE/libc++_shared.so" >/dev/null
"${adb_cmd[@]}" push "$model_dir/manifest.json" "$REMOTE/model/manifest.json" >/dev/null
"${adb_cmd[@]}" push "$model_dir/model_arm.nb" "$REMOTE/model/model_arm.nb" >/dev/null
"${adb_cmd[@]}" push "$image" "$REMOTE/$image_name" >/dev/null

# adb shell does not always return the remote exit code: the command prints it last.
quoted_args=""
for a in "${demo_args[@]}"; do quoted_args+=" '${a//\'/\'\\\'\'}'"; done
output="$("${adb_cmd[@]}" shell "cd $REMOTE && chmod +x mobileseg_lite_demo && \
LD_LIBRARY_PATH=$REMOTE ./mobileseg_lite_demo --model_dir model --image '$image_name' \
--out_dir out$quoted_args 2>&1; echo MOBILESEG_EXIT=\$?")"
code="$(sed -n 's/^MOBILESEG_EXIT=\([0-9]*\).*/\1/p' <<<"$output" | tail -n 1)"
sed '/^MOBILESEG_EXIT=/d' <<<"$output"
[[ -n "$code" ]] || die "the demo did not run on the device"
if [[ "$code" == 0 ]]; then
    mkdir -p "$out_dir"
    stem="${image_name%.*}"
    "${adb_cmd[@]}" pull "$REMOTE/out/${stem}_mask.png" "$out_dir/" >/dev/null
    "${adb_cmd[@]}" pull "$REMOTE/out/${stem}_overlay.png" "$out_dir/" >/dev/null
    echo "pulled ${stem}_mask.png and ${stem}_overlay.png into $out_dir"
fi
exit "$code"
