set -o pipefail
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
python3 gluon_dev/gluon_check.py 2>&1 | tee $OUT/check.log
timeout 200 python3 -m pytest -q -x tests/test_kernels_triton.py -k "gluon" 2>&1 | tail -25 | tee $OUT/pytest_gluon.log
V='[{"gluon":1},{"gluon":1,"gluon_block_m":64,"gluon_num_warps":4},{"gluon":1,"gluon_num_buf":3},{"edge_n":32},{"gluon":1},{"gluon":1,"gluon_block_m":64,"gluon_num_warps":4}]'
timeout 280 python3 -m tmix_kernels.bench --lengths 32k,64k,128k --baselines flex --json $OUT/bench1.json --variants "$V" 2>&1 | grep -v "^{" | tail -30
